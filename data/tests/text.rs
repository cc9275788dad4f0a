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

#[test]
fn a_restricted_vocabulary_keeps_specials_characters_and_frequent_pieces() {
    use kdprune_data::text::{restrict_vocabulary, TextTokenizer};
    let path = shared_dir()
        .join("models")
        .join("all-MiniLM-L6-v2")
        .join("tokenizer.json");
    if !path.is_file() {
        println!("skipping: {} not found", path.display());
        return;
    }
    let json = std::fs::read_to_string(&path).unwrap();
    let texts = [
        "the quick brown fox jumps over the lazy dog",
        "the quickest foxes outjumped the laziest dogs",
        "pack my box with five dozen liquor jugs!",
    ];
    let original = TextTokenizer::from_file(&path, 64).unwrap();
    let pieces =
        |t: &TextTokenizer, s: &str| -> Vec<u32> { t.encode_batch(&[s]).unwrap().row(0).to_vec() };
    // room for every piece the texts use: the same tokenisation, new ids
    let all = restrict_vocabulary(&json, &texts, 200).unwrap();
    assert_eq!(restrict_vocabulary(&json, &texts, 200).unwrap(), all);
    let small = TextTokenizer::from_json(&all, 64).unwrap();
    // [PAD] [UNK] [CLS] [SEP] [MASK] (originally 0, 100, 101, 102, 103) become 0..4
    for (id, t) in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .enumerate()
    {
        assert_eq!(small.token_id(t), Some(id as u32), "{t}");
    }
    assert!(small.vocab_size() < 200, "{}", small.vocab_size());
    for text in texts {
        let (a, b) = (pieces(&original, text), pieces(&small, text));
        assert_eq!(a.len(), b.len(), "{text}");
        assert_eq!((b[0], *b.last().unwrap()), (2, 3));
        assert!(!b.contains(&1), "{text}: {b:?}");
    }
    // the smallest vocabulary holds the specials and characters only:
    // every word splits into its characters, never [UNK]
    let err = restrict_vocabulary(&json, &texts, 10)
        .unwrap_err()
        .to_string();
    // "… the special tokens and the K single characters the texts use do not fit …"
    let k: usize = err
        .split("and the ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    let smallest = 5 + k;
    let tiny = TextTokenizer::from_json(&restrict_vocabulary(&json, &texts, smallest).unwrap(), 64)
        .unwrap();
    assert_eq!(tiny.vocab_size(), smallest);
    for text in texts {
        let chars = text.chars().filter(|c| !c.is_whitespace()).count();
        assert_eq!(pieces(&tiny, text).len(), chars + 2, "{text}");
        assert!(!pieces(&tiny, text).contains(&1), "{text}");
    }
    // a word of characters the texts never used is [UNK]
    assert!(pieces(&tiny, "77").contains(&1));
    // sizes that cannot hold the characters, no texts, not a tokenizer
    assert!(restrict_vocabulary(&json, &[], 100).is_err());
    assert!(restrict_vocabulary("{}", &texts, 100).is_err());
    assert!(TextTokenizer::from_json("{", 16).is_err());
}
