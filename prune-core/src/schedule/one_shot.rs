//! One-shot pruning: score once, one selection, retrain under the fixed mask.

use super::{Learner, Outcome, Stage};
use crate::importance::{Importance, ScoringContext};
use crate::{MaskSet, Result, Scope};

/// Prunes with `criterion` (its masks at `sparsity` under `scope`, among the
/// weights `kept` keeps; see [`Importance::prune`]) reading the model through
/// `ctx`, applies the masks to `learner` and retrains it ([`Stage::Retrain`])
/// under them. The paper's method is this driver with the teacher-guided
/// criterion on the student fine-tuned under the teacher.
pub fn one_shot<L: Learner>(
    learner: &mut L,
    criterion: &dyn Importance,
    ctx: &mut dyn ScoringContext,
    sparsity: f64,
    scope: Scope,
    kept: &MaskSet,
) -> Result<Outcome<L::Report>> {
    let mut masks = criterion.prune(ctx, sparsity, scope, kept)?;
    learner.apply(&masks)?;
    let report = learner.train(Stage::Retrain, &mut masks)?;
    Ok(Outcome {
        masks,
        report,
        masks_fixed_from_step: 0,
    })
}
