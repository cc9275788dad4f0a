//! Which parameters may be pruned.

/// Chooses the prunable parameters of a model from their names and shapes.
///
/// A parameter is prunable when its rank is at least 2 (weights of linear and
/// convolution layers) and its name matches none of the `exclude` globs
/// (see [`glob_match`]). `keep_first` / `keep_last` then also spare the first
/// / last of the remaining parameters in forward order (often the input
/// convolution and the classifier, which are small and sensitive).
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default)
)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamFilter {
    /// Glob patterns (`*` = any run of characters) matched against the full name.
    pub exclude: Vec<String>,
    /// Never prune the first prunable parameter.
    pub keep_first: bool,
    /// Never prune the last prunable parameter.
    pub keep_last: bool,
}

impl Default for ParamFilter {
    /// Excludes biases, batch-norm / norm parameters and running statistics;
    /// keeps neither the first nor the last layer dense.
    fn default() -> Self {
        Self {
            exclude: [
                "*.bias",
                "*bn*",
                "*norm*",
                "*running_mean",
                "*running_var",
                "*num_batches_tracked",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            keep_first: false,
            keep_last: false,
        }
    }
}

impl ParamFilter {
    /// Whether `name` matches one of the `exclude` patterns.
    pub fn is_excluded(&self, name: &str) -> bool {
        self.exclude.iter().any(|p| glob_match(p, name))
    }

    /// The prunable names among `params` = `(name, shape)` listed in the
    /// model's forward order, returned in that order: tensors of rank ≥ 2
    /// matching no exclude pattern, minus the first / last of them when
    /// `keep_first` / `keep_last` is set.
    pub fn prunable(&self, params: &[(String, Vec<usize>)]) -> Vec<String> {
        let mut names: Vec<String> = params
            .iter()
            .filter(|(name, shape)| shape.len() >= 2 && !self.is_excluded(name))
            .map(|(name, _)| name.clone())
            .collect();
        if self.keep_first && !names.is_empty() {
            names.remove(0);
        }
        if self.keep_last {
            names.pop();
        }
        names
    }
}

/// Whether `name` matches `pattern` as a whole, where `*` matches any
/// (possibly empty) run of characters and every other character matches
/// itself (case-sensitive).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = name.chars().collect();
    let (mut pi, mut si) = (0, 0);
    // Position of the last `*` seen and the name position it was tried at:
    // on a mismatch the star absorbs one more character (greedy backtracking,
    // linear in practice and never exponential).
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}
