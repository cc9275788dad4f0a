//! The output files of `kdprune sweep`: finished cells (method × sparsity ×
//! seed) turned into `results.csv`, `results.json`, `table.md`,
//! `accuracy.svg` and `accuracy.png`.
//!
//! Everything is rendered in memory first and then written file by file
//! through a temporary file and a rename, so a failure (a NaN, a plotting
//! error) leaves the previous files as they were and a crash never leaves a
//! half-written one.

use std::path::Path;

use anyhow::Result;

pub use super::cell::CellResult;
use super::grid::Grid;
use super::plot::{render_png, render_svg, PlotData};
use crate::files::write_atomic;

/// The header of `results.csv`: the fields of [`CellResult`] in order.
pub const CSV_HEADER: [&str; 11] = [
    "method",
    "sparsity",
    "seed",
    "measured_sparsity",
    "final_accuracy",
    "best_accuracy",
    "dense_accuracy",
    "epochs",
    "forward_passes",
    "backward_passes",
    "seconds",
];

/// Writes `results.csv`, `results.json`, `table.md`, `accuracy.svg`,
/// `accuracy.png` into `dir` (created if missing), each atomically
/// (temporary file + rename, never a half-written file).
///
/// `methods` and `sparsities` give the row/column order; cells of other
/// methods or sparsities are left out of every file. Cells within one
/// (method, sparsity) are ordered by seed. `title` heads `table.md` and the
/// plot; `command`, quoted in `table.md`, is the `kdprune sweep` command that
/// produced the results, as rebuilt from its config file and output folder
/// (not the command line as typed: other flags are left out).
///
/// Errors, before anything is written: no cells, an empty or repeated
/// method/sparsity list, a non-finite or out-of-range number in any cell,
/// the same (method, sparsity, seed) twice, no cell in the grid.
pub fn write_results(
    dir: &Path,
    cells: &[CellResult],
    methods: &[String],
    sparsities: &[f64],
    title: &str,
    command: &str,
) -> Result<()> {
    let grid = Grid::new(cells, methods, sparsities)?;
    let csv = to_csv(&grid.ordered());
    let json = serde_json::to_string_pretty(&grid.ordered())? + "\n";
    let table = table_md(&grid, title, command);
    let plot = PlotData::new(&grid);
    let svg = render_svg(&plot, title)?;
    let png = render_png(&plot, title)?;

    for (name, bytes) in [
        ("results.csv", csv.as_bytes()),
        ("results.json", json.as_bytes()),
        ("table.md", table.as_bytes()),
        ("accuracy.svg", svg.as_bytes()),
        ("accuracy.png", png.as_slice()),
    ] {
        write_atomic(&dir.join(name), bytes)?;
    }
    Ok(())
}

/// One line per cell under [`CSV_HEADER`]; floats in Rust's shortest
/// round-trip form, text quoted (RFC 4180) when it holds `,`, `"` or a newline.
fn to_csv(cells: &[&CellResult]) -> String {
    let mut out = CSV_HEADER.join(",") + "\n";
    for c in cells {
        let fields = [
            csv_text(&c.method),
            c.sparsity.to_string(),
            c.seed.to_string(),
            c.measured_sparsity.to_string(),
            c.final_accuracy.to_string(),
            c.best_accuracy.to_string(),
            c.dense_accuracy.to_string(),
            c.epochs.to_string(),
            c.forward_passes.to_string(),
            c.backward_passes.to_string(),
            c.seconds.to_string(),
        ];
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

fn csv_text(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `|` would end a markdown table cell.
fn md_text(s: &str) -> String {
    s.replace('|', "\\|")
}

/// `950`, `12.3 k`, `4.56 M`, `1.23 G`: pass counts run into the billions.
fn human_count(x: f64) -> String {
    let (v, unit) = match x.abs() {
        a if a >= 1e9 => (x / 1e9, " G"),
        a if a >= 1e6 => (x / 1e6, " M"),
        a if a >= 1e3 => (x / 1e3, " k"),
        _ => return format!("{x:.0}"),
    };
    let digits = if v.abs() >= 100.0 {
        0
    } else if v.abs() >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.digits$}{unit}")
}

/// The accuracy table, the cost table, the command and a legend.
fn table_md(grid: &Grid, title: &str, command: &str) -> String {
    let mut s = format!("# {title}\n\n## Test accuracy (%)\n\n");
    s.push_str("| method |");
    for sp in grid.sparsities {
        s.push_str(&format!(" {sp} |"));
    }
    s.push_str("\n|---|");
    s.push_str(&"---:|".repeat(grid.sparsities.len()));
    s.push('\n');

    let (mut single_seed, mut missing) = (false, false);
    for (m, method) in grid.methods.iter().enumerate() {
        s.push_str(&format!("| {} |", md_text(method)));
        for sp in 0..grid.sparsities.len() {
            let fin = grid.summary(m, sp, |c| c.final_accuracy);
            let best = grid.summary(m, sp, |c| c.best_accuracy);
            match (fin, best) {
                (Some(f), Some(b)) => {
                    single_seed |= f.n == 1;
                    s.push_str(&format!(
                        " {} ({}), n = {} |",
                        f.show(100.0),
                        b.show(100.0),
                        f.n
                    ));
                }
                _ => {
                    missing = true;
                    s.push_str(" — |");
                }
            }
        }
        s.push('\n');
    }
    if let Some(d) = grid.dense() {
        s.push_str(&format!(
            "\nDense student: {} % over {} seed{}.\n",
            d.show(100.0),
            d.n,
            if d.n == 1 { "" } else { "s" }
        ));
    }

    s.push_str("\n## Cost per cell (mean over the method's cells)\n\n");
    s.push_str(
        "| method | cells | epochs | forward passes | backward passes | wall time (s) |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    for (m, method) in grid.methods.iter().enumerate() {
        let cells: Vec<&CellResult> = grid.cells[m].iter().flatten().copied().collect();
        if cells.is_empty() {
            s.push_str(&format!("| {} | 0 | — | — | — | — |\n", md_text(method)));
            continue;
        }
        let mean = |f: &dyn Fn(&CellResult) -> f64| {
            cells.iter().map(|c| f(c)).sum::<f64>() / cells.len() as f64
        };
        s.push_str(&format!(
            "| {} | {} | {:.2} | {} | {} | {:.1} |\n",
            md_text(method),
            cells.len(),
            mean(&|c| c.epochs),
            human_count(mean(&|c| c.forward_passes as f64)),
            human_count(mean(&|c| c.backward_passes as f64)),
            mean(&|c| c.seconds),
        ));
    }

    // A fence longer than any run of backticks in the command.
    let longest = command
        .split(|ch| ch != '`')
        .map(str::len)
        .max()
        .unwrap_or(0);
    let fence = "`".repeat((longest + 1).max(3));
    s.push_str(&format!("\n## Command\n\n{fence}sh\n{command}\n{fence}\n"));

    s.push_str(
        "\n## Legend\n\n\
         - Columns are target sparsities of the prunable weights; each cell reads \
         `final mean ± std (best mean ± std), n = seeds`.\n\
         - *final*: test accuracy at the end; *best*: best test accuracy over the epochs \
         of the last training stage (selected on the test set, so optimistic: for \
         reference only).\n\
         - ± is the sample standard deviation over seeds (n − 1 in the denominator).\n",
    );
    if single_seed {
        s.push_str("- Cells with n = 1 show the single run without a spread.\n");
    }
    if missing {
        s.push_str("- — marks a cell with no finished run.\n");
    }
    s.push_str(
        "- Costs: *epochs* of training beyond the shared dense student; forward and \
         backward passes count samples (one sample through the network once = 1; \
         k = 10³, M = 10⁶, G = 10⁹); wall time of the cell.\n",
    );
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn cell(method: &str, sparsity: f64, seed: u64, final_accuracy: f64) -> CellResult {
        CellResult {
            method: method.into(),
            sparsity,
            seed,
            measured_sparsity: sparsity,
            final_accuracy,
            best_accuracy: final_accuracy + 0.01,
            dense_accuracy: 0.97,
            epochs: 10.0,
            forward_passes: 1_200_000,
            backward_passes: 600_000,
            seconds: 12.5,
        }
    }

    pub(crate) fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Two methods × two sparsities × three seeds, one seed missing at
    /// (teacher-guided, 0.99) and a cell of an unlisted method.
    fn sweep() -> Vec<CellResult> {
        let mut cells = Vec::new();
        for (seed, accs) in [
            (2u64, [0.91, 0.80, 0.93, 0.85]),
            (0, [0.90, 0.78, 0.92, 0.86]),
            (1, [0.92, 0.79, 0.94, 0.0]),
        ] {
            cells.push(cell("magnitude", 0.9, seed, accs[0]));
            cells.push(cell("magnitude", 0.99, seed, accs[1]));
            cells.push(cell("teacher-guided", 0.9, seed, accs[2]));
            if seed != 1 {
                cells.push(cell("teacher-guided", 0.99, seed, accs[3]));
            }
        }
        cells.push(cell("random", 0.9, 0, 0.5));
        cells
    }

    #[test]
    fn csv_has_the_struct_order_header_and_round_trips() {
        let cells = sweep();
        let methods = names(&["magnitude", "teacher-guided"]);
        let grid = Grid::new(&cells, &methods, &[0.9, 0.99]).unwrap();
        let csv = to_csv(&grid.ordered());
        let mut lines = csv.lines();
        assert_eq!(lines.next().unwrap(), CSV_HEADER.join(","));

        // The header follows the struct's field order (serde writes fields in
        // declaration order).
        let json = serde_json::to_string(&cells[0]).unwrap();
        let at: Vec<usize> = CSV_HEADER
            .iter()
            .map(|k| json.find(&format!("\"{k}\":")).expect(k))
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{json}");

        let back: Vec<CellResult> = lines
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                assert_eq!(f.len(), CSV_HEADER.len(), "{l}");
                CellResult {
                    method: f[0].into(),
                    sparsity: f[1].parse().unwrap(),
                    seed: f[2].parse().unwrap(),
                    measured_sparsity: f[3].parse().unwrap(),
                    final_accuracy: f[4].parse().unwrap(),
                    best_accuracy: f[5].parse().unwrap(),
                    dense_accuracy: f[6].parse().unwrap(),
                    epochs: f[7].parse().unwrap(),
                    forward_passes: f[8].parse().unwrap(),
                    backward_passes: f[9].parse().unwrap(),
                    seconds: f[10].parse().unwrap(),
                }
            })
            .collect();
        let expected: Vec<CellResult> = grid.ordered().into_iter().cloned().collect();
        assert_eq!(back, expected);
        assert_eq!(back.len(), 11, "the `random` cell is left out");
        assert_eq!(csv_text("a,\"b\""), "\"a,\"\"b\"\"\"");
    }

    #[test]
    fn rows_follow_the_method_order_and_cells_the_seed_order() {
        let cells = sweep();
        let methods = names(&["teacher-guided", "magnitude"]);
        let grid = Grid::new(&cells, &methods, &[0.99, 0.9]).unwrap();
        let order: Vec<(&str, f64, u64)> = grid
            .ordered()
            .iter()
            .map(|c| (c.method.as_str(), c.sparsity, c.seed))
            .collect();
        assert_eq!(
            order[..4],
            [
                ("teacher-guided", 0.99, 0),
                ("teacher-guided", 0.99, 2),
                ("teacher-guided", 0.9, 0),
                ("teacher-guided", 0.9, 1),
            ]
        );
        let md = table_md(&grid, "t", "kdprune sweep");
        let tg = md.find("| teacher-guided |").unwrap();
        let mag = md.find("| magnitude |").unwrap();
        assert!(tg < mag);
        assert!(md.contains("| method | 0.99 | 0.9 |"), "{md}");
        assert!(!md.contains("random"));
    }

    #[test]
    fn the_table_shows_mean_std_best_and_n() {
        let cells = sweep();
        let methods = names(&["magnitude", "teacher-guided", "imp"]);
        let grid = Grid::new(&cells, &methods, &[0.9, 0.99]).unwrap();
        let md = table_md(&grid, "Digits sweep", "kdprune sweep --config 'a b.toml'");
        // magnitude @ 0.9: final [0.90, 0.92, 0.91] → 91.00 ± 1.00; best is
        // each + 0.01 → 92.00 ± 1.00.
        // magnitude @ 0.99: [0.78, 0.79, 0.80] → 79.00 ± 1.00 (80.00 ± 1.00).
        // teacher-guided @ 0.99: [0.86, 0.85] → mean 85.50; deviations ±0.5
        // points; Σd² = 0.5; / 1; sqrt = 0.7071… → 0.71.
        assert!(
            md.contains("| magnitude | 91.00 ± 1.00 (92.00 ± 1.00), n = 3 | 79.00 ± 1.00 (80.00 ± 1.00), n = 3 |"),
            "{md}"
        );
        assert!(md.contains("85.50 ± 0.71 (86.50 ± 0.71), n = 2 |"), "{md}");
        assert!(md.contains("| imp | — | — |"), "{md}");
        assert!(md.contains("| imp | 0 | — | — | — | — |"), "{md}");
        // 11 cells of 1.2 M forward / 600 k backward passes each.
        assert!(
            md.contains("| magnitude | 6 | 10.00 | 1.20 M | 600 k | 12.5 |"),
            "{md}"
        );
        assert!(
            md.contains("```sh\nkdprune sweep --config 'a b.toml'\n```"),
            "{md}"
        );
        assert!(md.starts_with("# Digits sweep\n"));
        assert!(
            md.contains("Dense student: 97.00 ± 0.00 % over 3 seeds."),
            "{md}"
        );
        assert!(!md.contains("n = 1 show"), "every cell has ≥ 2 seeds");

        let one = [cell("gmp", 0.95, 4, 0.8)];
        let gmp = names(&["gmp"]);
        let grid = Grid::new(&one, &gmp, &[0.95]).unwrap();
        let md = table_md(&grid, "t", "c");
        assert!(md.contains("| gmp | 80.00 (81.00), n = 1 |"), "{md}");
        assert!(md.contains("Cells with n = 1 show the single run"), "{md}");
    }

    #[test]
    fn all_five_files_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("new/sub");
        let cells = sweep();
        let methods = names(&["magnitude", "teacher-guided"]);
        write_results(
            &out,
            &cells,
            &methods,
            &[0.9, 0.99],
            "Digits: LeNet-300-100",
            "kdprune sweep",
        )
        .unwrap();
        let mut files: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        assert_eq!(
            files,
            [
                "accuracy.png",
                "accuracy.svg",
                "results.csv",
                "results.json",
                "table.md"
            ],
            "no temporary file is left behind"
        );

        let png = std::fs::read(out.join("accuracy.png")).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert!(
            png.len() > 10_000,
            "a plot with text and lines: {} bytes",
            png.len()
        );
        let img = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), super::super::plot::PLOT_SIZE);
        // Something besides the white background was drawn (lines and glyphs).
        let dark = img
            .pixels()
            .filter(|p| p.0.iter().all(|&v| v < 100))
            .count();
        assert!(dark > 2_000, "{dark} dark pixels");
        // The title's glyphs: dark pixels in the band above the chart.
        let title = img
            .enumerate_pixels()
            .filter(|&(_, y, p)| y < 45 && p.0.iter().all(|&v| v < 100))
            .count();
        assert!(title > 100, "{title} dark pixels in the title band");

        let svg = std::fs::read_to_string(out.join("accuracy.svg")).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
        // plotters writes each text on a line of its own.
        for m in &methods {
            assert!(svg.lines().any(|l| l.trim() == m), "legend lacks {m}");
        }
        for text in ["0.9", "0.99", "Digits: LeNet-300-100", "dense student"] {
            assert!(svg.lines().any(|l| l.trim() == text), "svg lacks {text}");
        }

        let json: Vec<CellResult> =
            serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap())
                .unwrap();
        assert_eq!(json.len(), 11);
        assert_eq!(json[0].method, "magnitude");

        // A second call replaces the files in place.
        write_results(&out, &cells[..1], &methods, &[0.9], "again", "c").unwrap();
        let md = std::fs::read_to_string(out.join("table.md")).unwrap();
        assert!(md.starts_with("# again\n"));
    }

    #[test]
    fn bad_inputs_are_clear_errors() {
        let methods = names(&["magnitude"]);
        let err = |cells: &[CellResult], methods: &[String], sp: &[f64]| {
            let dir = tempfile::tempdir().unwrap();
            let e = write_results(dir.path(), cells, methods, sp, "t", "c").unwrap_err();
            assert_eq!(
                std::fs::read_dir(dir.path()).unwrap().count(),
                0,
                "nothing written"
            );
            e.to_string()
        };
        assert!(err(&[], &methods, &[0.9]).contains("no finished cells"));

        let mut nan = cell("magnitude", 0.9, 3, 0.9);
        nan.final_accuracy = f64::NAN;
        let e = err(&[nan], &methods, &[0.9]);
        assert!(
            e.contains("seed 3") && e.contains("final_accuracy is NaN"),
            "{e}"
        );

        let mut pct = cell("magnitude", 0.9, 0, 0.9);
        pct.best_accuracy = 91.0;
        let e = err(&[pct], &methods, &[0.9]);
        assert!(e.contains("best_accuracy = 91 is outside [0, 1]"), "{e}");

        let ok = [cell("magnitude", 0.9, 0, 0.9)];
        assert!(err(&ok, &[], &[0.9]).contains("at least one method"));
        assert!(err(&ok, &methods, &[]).contains("at least one method"));
        assert!(err(&ok, &methods, &[f64::NAN]).contains("not in [0, 1)"));
        assert!(err(&ok, &methods, &[0.9, 0.9]).contains("listed twice"));
        assert!(err(&ok, &names(&["a", "a"]), &[0.9]).contains("listed twice"));
        assert!(err(&ok, &names(&["gmp"]), &[0.9]).contains("none of the 1 cells"));
        let twice = [ok[0].clone(), ok[0].clone()];
        assert!(err(&twice, &methods, &[0.9]).contains("two results for method `magnitude`"));
    }

    #[test]
    fn counts_are_printed_with_si_prefixes() {
        assert_eq!(human_count(950.0), "950");
        assert_eq!(human_count(12_345.0), "12.3 k");
        assert_eq!(human_count(1.234e9), "1.23 G");
    }
}
