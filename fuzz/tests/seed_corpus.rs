//! The short run CI makes: every target's seeds and a few hundred mutants
//! each, no panic. (`scripts/fuzz.sh` runs a million per target.)

#[test]
fn every_parser_survives_a_short_mutation_run() {
    let work = tempfile::tempdir().unwrap();
    let findings = work.path().join("findings");
    let targets = kdprune_fuzz::targets(work.path()).unwrap();
    assert_eq!(targets.len(), 6);
    for target in &targets {
        let stats = kdprune_fuzz::fuzz(target, 300, 1, work.path(), &findings).unwrap();
        assert_eq!(stats.executions, 300);
        // every seed is valid input, so the parser accepted at least those
        assert!(
            stats.accepted >= target.seeds.len() as u64,
            "{}: only {} accepted",
            target.name,
            stats.accepted
        );
        assert!(
            stats.panics.is_empty(),
            "{}: panicked on {:?}",
            target.name,
            stats.panics
        );
    }
}

/// Inputs that once made a parser panic (`fuzz/corpus/TARGET-*.bin`, kept
/// from fuzzing runs): each is now refused or read, never a panic.
#[test]
fn past_findings_no_longer_panic() {
    let work = tempfile::tempdir().unwrap();
    let targets = kdprune_fuzz::targets(work.path()).unwrap();
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&corpus).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let target = targets
            .iter()
            .find(|t| name.starts_with(&format!("{}-", t.name)))
            .unwrap_or_else(|| panic!("{name}: no target of that name"));
        let file = work.path().join(target.file_name);
        std::fs::copy(&path, &file).unwrap();
        let outcome = std::panic::catch_unwind(|| (target.run)(&file));
        assert!(outcome.is_ok(), "{name} panics again");
        replayed += 1;
    }
    assert!(replayed >= 1);
}
