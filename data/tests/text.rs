//! The WordNet glosses data and the retrieval arithmetic.

use std::path::{Path, PathBuf};

use kdprune_data::text::{
    load_glosses, parse_glosses, rank_of, retrieval_scores, GlossSplit, RetrievalTask,
};

fn shared_dir() -> PathBuf {
    std::env::var_os("KDPRUNE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared")))
}

const HEADER: &str = "synset\tpos\tlemmas\tgloss\texamples\n";

#[test]
fn glosses_parse_into_synsets_and_a_retrieval_task() {
    let text = format!(
        "{HEADER}1-n\tnoun\tcat,feline\ta small animal\tthe cat sat ||| a cat\n2-v\tverb\trun\tmove fast\the runs\n"
    );
    let synsets = parse_glosses(Path::new("x.tsv"), &text).unwrap();
    assert_eq!(synsets.len(), 2);
    assert_eq!(synsets[0].lemmas, ["cat", "feline"]);
    assert_eq!(synsets[0].examples, ["the cat sat", "a cat"]);
    let task = RetrievalTask::new(&synsets);
    assert_eq!(task.glosses, ["a small animal", "move fast"]);
    assert_eq!(
        task.queries,
        [
            ("the cat sat".to_string(), 0),
            ("a cat".to_string(), 0),
            ("he runs".to_string(), 1)
        ]
    );
}

#[test]
fn malformed_glosses_are_refused_with_the_line() {
    let bad = [
        ("synset\tpos\n1\tn\n".to_string(), "header"),
        (format!("{HEADER}1-n\tnoun\tcat\n"), "line 2: 3 fields"),
        (
            format!("{HEADER}1-n\tnoun\tcat\t \tan example\n"),
            "line 2: empty gloss",
        ),
        (format!("{HEADER}1-n\tnoun\tcat\ta gloss\t\n"), "no example"),
        (HEADER.to_string(), "no synsets"),
    ];
    for (text, want) in bad {
        let err = parse_glosses(Path::new("x.tsv"), &text)
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{err} should say {want}");
    }
}

#[test]
fn ranks_count_ties_against_the_answer() {
    let scores = [0.5f32, 0.9, 0.5, 0.1];
    assert_eq!(rank_of(&scores, 1), 1);
    // 0.9 above, and the other 0.5 ties: rank 3 for either 0.5
    assert_eq!(rank_of(&scores, 0), 3);
    assert_eq!(rank_of(&scores, 2), 3);
    assert_eq!(rank_of(&scores, 3), 4);
    assert_eq!(rank_of(&[f32::NAN, 0.2], 0), 2);
    // ranks 1, 2, 4: accuracy@1 = 1/3, MRR = (1 + 1/2 + 1/4) / 3
    let (acc, mrr) = retrieval_scores(&[1, 2, 4]);
    assert!((acc - 1.0 / 3.0).abs() < 1e-12);
    assert!((mrr - 1.75 / 3.0).abs() < 1e-12);
}

#[test]
fn the_shared_splits_load_whole() {
    let dir = shared_dir().join("datasets").join("wordnet-glosses");
    if !dir.is_dir() {
        println!("skipping: {} not found", dir.display());
        return;
    }
    // the README's counts; the queries as `benchmarks/embed_reference.py --retrieval` counts them
    let test = load_glosses(&dir, GlossSplit::Test).unwrap();
    assert_eq!(test.len(), 1_462);
    assert_eq!(RetrievalTask::new(&test).queries.len(), 2_025);
    assert_eq!(load_glosses(&dir, GlossSplit::Dev).unwrap().len(), 1_465);
    assert_eq!(load_glosses(&dir, GlossSplit::Train).unwrap().len(), 27_332);
}
