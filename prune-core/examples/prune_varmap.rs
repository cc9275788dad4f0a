//! Prunes a Candle model of your own — its `VarMap` — to 75 % sparsity by
//! global magnitude, then keeps it pruned through optimizer steps: the masks
//! zero the gradients before each step (so the optimizer's state never sees
//! a pruned weight) and the weights after it (AdamW's weight decay and
//! momentum would move them otherwise).
//!
//! Run with `cargo run -p prune-core --example prune_varmap`.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{linear, AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use prune_core::{importance, select, sparsity_report, NamedTensors, ParamFilter};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let fc1 = linear(16, 32, vb.pp("fc1"))?;
    let fc2 = linear(32, 4, vb.pp("fc2"))?;
    let model =
        |x: &Tensor| -> candle_core::Result<Tensor> { fc2.forward(&fc1.forward(x)?.relu()?) };

    // The variables by name, sorted (a VarMap's own order is not stable).
    let mut vars: Vec<(String, candle_core::Var)> = varmap
        .data()
        .lock()
        .map_err(|_| "variable map lock poisoned")?
        .iter()
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let shapes: Vec<(String, Vec<usize>)> = vars
        .iter()
        .map(|(n, v)| (n.clone(), v.dims().to_vec()))
        .collect();
    let prunable = ParamFilter::default().prunable(&shapes);
    let weights: NamedTensors = vars
        .iter()
        .filter(|(n, _)| prunable.contains(n))
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    let masks = select::global(&importance::magnitude(&weights)?, 0.75)?;
    masks.apply_to_vars(&vars)?;

    // Training steps under the mask.
    let mut opt = AdamW::new(
        vars.iter().map(|(_, v)| v.clone()).collect(),
        ParamsAdamW {
            lr: 1e-2,
            weight_decay: 0.01,
            ..ParamsAdamW::default()
        },
    )?;
    let xs = Tensor::arange(0f32, 64.0 * 16.0, &device)?
        .reshape((64, 16))?
        .affine(1.0 / 512.0, -1.0)?
        .sin()?;
    let ys = xs.narrow(1, 0, 4)?.argmax(1)?;
    for step in 0..20 {
        let loss = candle_nn::loss::cross_entropy(&model(&xs)?, &ys)?;
        let mut grads = loss.backward()?;
        masks.apply_to_grads(&mut grads, &vars)?;
        opt.step(&grads)?;
        masks.apply_to_vars(&vars)?;
        if step % 5 == 0 {
            println!("step {step:2}: loss {:.4}", loss.to_scalar::<f32>()?);
        }
    }

    let tensors: NamedTensors = vars
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    let report = sparsity_report(&tensors, &prunable, Some(&masks))?;
    println!("{}", report.table());
    assert_eq!(report.violations(), 0, "a pruned weight came back");
    Ok(())
}
