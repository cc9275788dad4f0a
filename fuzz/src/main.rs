//! `kdprune-fuzz [EXECUTIONS] [SEED] [TARGET…]`: runs every target (or
//! those named) for EXECUTIONS mutants each (default 1,000,000), with the
//! address space capped at 4 GiB, and prints executions, rate, accepted
//! inputs and panics per target. Inputs that panicked are kept under
//! `fuzz-findings/`. Exits non-zero when anything panicked.
//!
//! `kdprune-fuzz replay TARGET FILE` runs one target on one input with the
//! default panic hook (the message and, with `RUST_BACKTRACE=1`, where).

use std::process::ExitCode;

fn main() -> anyhow::Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("replay") {
        let (Some(name), Some(file)) = (args.get(1), args.get(2)) else {
            anyhow::bail!("usage: kdprune-fuzz replay TARGET FILE");
        };
        let work = tempfile::tempdir()?;
        let target = kdprune_fuzz::targets(work.path())?
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| anyhow::anyhow!("no target `{name}`"))?;
        let path = work.path().join(target.file_name);
        std::fs::copy(file, &path)?;
        println!("accepted: {}", (target.run)(&path));
        return Ok(ExitCode::SUCCESS);
    }
    let executions: u64 = args
        .first()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let seed: u64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(0);
    let only: Vec<&str> = args.iter().skip(2).map(String::as_str).collect();
    kdprune_fuzz::limit_memory(4 << 30);
    let work = tempfile::tempdir()?;
    let findings = std::path::Path::new("fuzz-findings");
    println!("| target | executions | seconds | executions/s | accepted | panics |");
    println!("|---|---|---|---|---|---|");
    let mut failed = false;
    for target in kdprune_fuzz::targets(work.path())? {
        if !only.is_empty() && !only.contains(&target.name) {
            continue;
        }
        let s = kdprune_fuzz::fuzz(&target, executions, seed, work.path(), findings)?;
        println!(
            "| {} | {} | {:.0} | {:.0} | {} | {} |",
            s.name,
            s.executions,
            s.seconds,
            s.executions as f64 / s.seconds.max(1e-9),
            s.accepted,
            s.panics.len()
        );
        for p in &s.panics {
            eprintln!("panic: {}", p.display());
        }
        failed |= !s.panics.is_empty();
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
