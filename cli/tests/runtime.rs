//! `runtime::tune_process` sets candle's pool spin limit unless the user did.
//! (One test in its own binary: it changes the process environment.)

use kdprune_cli::runtime::{tune_process, CANDLE_SPIN_LIMIT};

#[test]
fn the_spin_limit_is_set_unless_the_user_set_one() {
    const VAR: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";
    std::env::remove_var(VAR);
    tune_process();
    assert_eq!(
        std::env::var(VAR).as_deref(),
        Ok(CANDLE_SPIN_LIMIT.to_string().as_str())
    );
    std::env::set_var(VAR, "77");
    tune_process();
    assert_eq!(std::env::var(VAR).as_deref(), Ok("77"));
}
