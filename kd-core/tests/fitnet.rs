//! FitNets: the regressor's shapes, parameters and gradients, and the hint loss
//! against PyTorch.
//!
//! Golden values: PyTorch in float64. Every snippet below runs after this prelude:
//!
//! ```python
//! import math, torch, torch.nn as nn, torch.nn.functional as F
//! def wave(shape, a, b, scale=1.0, offset=0.0):
//!     # scale·sin(i·a + b) + offset over the flat index i, rounded to f32 like the Rust side
//!     n = math.prod(shape)
//!     x = scale * torch.sin(torch.arange(n, dtype=torch.float64) * a + b) + offset
//!     return x.float().double().reshape(shape)
//! fs = wave((2, 3, 3, 3), 0.7, 0.3, 1.0, 0.5)   # student feature
//! ft = wave((2, 4, 3, 3), 0.45, -0.2, 1.5)      # teacher feature
//! conv = nn.Conv2d(3, 4, 1, bias=False).double()
//! bn = nn.BatchNorm2d(4).double()
//! with torch.no_grad():
//!     conv.weight.copy_(wave((4, 3, 1, 1), 1.3, 0.5))
//!     bn.weight.copy_(1 + wave((4,), 2.1, 0.1, 0.2))
//!     bn.bias.copy_(wave((4,), 0.9, 1.0, 0.1))
//! fsv = fs.clone().requires_grad_(True)
//! proj = F.relu(bn(conv(fsv)))              # train mode: batch statistics
//! loss = F.mse_loss(proj, ft)
//! loss.backward()
//! ```

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use kd_core::losses::{fitnet_loss, FitNetConfig, FitNetRegressor};
use kd_core::KdError;

mod common;
use common::*;

/// A conv regressor `3 → 4` under `regressor.pair0`, with the prelude's weights.
fn conv_regressor(varmap: &mut VarMap) -> Result<FitNetRegressor, Box<dyn std::error::Error>> {
    let vb = VarBuilder::from_varmap(varmap, DType::F32, &Device::Cpu);
    let reg = FitNetRegressor::conv(3, 4, &FitNetConfig::default(), vb.pp("regressor.pair0"))?;
    varmap.set_one(
        "regressor.pair0.conv.weight",
        wave(&[4, 3, 1, 1], 1.3, 0.5, 1.0, 0.0),
    )?;
    varmap.set_one("regressor.pair0.bn.weight", wave(&[4], 2.1, 0.1, 0.2, 1.0))?;
    varmap.set_one("regressor.pair0.bn.bias", wave(&[4], 0.9, 1.0, 0.1, 0.0))?;
    Ok(reg)
}

fn student_feature() -> Tensor {
    wave(&[2, 3, 3, 3], 0.7, 0.3, 1.0, 0.5)
}

fn teacher_feature() -> Tensor {
    wave(&[2, 4, 3, 3], 0.45, -0.2, 1.5, 0.0)
}

fn var(varmap: &VarMap, name: &str) -> Var {
    varmap.data().lock().unwrap()[name].clone()
}

#[test]
fn regressors_project_to_the_teacher_width() -> TestResult {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let cfg = FitNetConfig::default();

    let s4 = Tensor::zeros((2, 3, 5, 4), DType::F32, &Device::Cpu)?;
    let t4 = Tensor::zeros((2, 7, 5, 4), DType::F32, &Device::Cpu)?;
    let mut conv = FitNetRegressor::for_features(&s4, &t4, &cfg, vb.pp("regressor.a"))?;
    assert!(conv.is_conv());
    assert_eq!((conv.in_dim(), conv.out_dim()), (3, 7));
    assert_eq!(conv.forward_t(&s4, true)?.dims(), &[2, 7, 5, 4]);
    assert_eq!(conv.forward_t(&s4, false)?.dims(), &[2, 7, 5, 4]);

    let s2 = Tensor::zeros((6, 10), DType::F32, &Device::Cpu)?;
    let t2 = Tensor::zeros((6, 4), DType::F32, &Device::Cpu)?;
    let mut linear = FitNetRegressor::for_features(&s2, &t2, &cfg, vb.pp("regressor.b"))?;
    assert!(!linear.is_conv());
    assert!(linear.running_stats().is_none());
    assert_eq!(linear.forward_t(&s2, true)?.dims(), &[6, 4]);

    // Differing spatial sizes or ranks have no 1×1 / linear regressor.
    let t_small = Tensor::zeros((2, 7, 4, 4), DType::F32, &Device::Cpu)?;
    assert!(matches!(
        FitNetRegressor::for_features(&s4, &t_small, &cfg, vb.pp("regressor.c")),
        Err(KdError::ShapeMismatch(_))
    ));
    assert!(matches!(
        FitNetRegressor::for_features(&s4, &t2, &cfg, vb.pp("regressor.d")),
        Err(KdError::ShapeMismatch(_))
    ));
    // A feature of the wrong width is rejected, not broadcast.
    assert!(matches!(
        conv.forward_t(&t4, true),
        Err(KdError::ShapeMismatch(_))
    ));
    Ok(())
}

#[test]
fn regressor_parameters_live_in_the_varmap_and_get_gradients() -> TestResult {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let cfg = FitNetConfig::default();
    let mut conv = FitNetRegressor::conv(3, 4, &cfg, vb.pp("regressor.conv2"))?;
    let mut linear = FitNetRegressor::linear(6, 3, vb.pp("regressor.fc1"))?;

    let mut names: Vec<(String, Vec<usize>)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect();
    names.sort();
    // Running statistics are plain tensors: only the five trainable tensors are here.
    let expected = [
        ("regressor.conv2.bn.bias", vec![4]),
        ("regressor.conv2.bn.weight", vec![4]),
        ("regressor.conv2.conv.weight", vec![4, 3, 1, 1]),
        ("regressor.fc1.linear.bias", vec![3]),
        ("regressor.fc1.linear.weight", vec![3, 6]),
    ];
    let expected: Vec<(String, Vec<usize>)> = expected
        .into_iter()
        .map(|(n, s)| (n.to_string(), s))
        .collect();
    assert_eq!(names, expected);
    // BatchNorm starts as the identity affine map, as in PyTorch.
    assert_eq!(
        flat(var(&varmap, "regressor.conv2.bn.weight").as_tensor()),
        vec![1.0; 4]
    );
    assert_eq!(
        flat(var(&varmap, "regressor.conv2.bn.bias").as_tensor()),
        vec![0.0; 4]
    );

    let loss = (fitnet_loss(
        &conv.forward_t(&student_feature(), true)?,
        &teacher_feature(),
    )? + fitnet_loss(
        &linear.forward_t(&wave(&[4, 6], 0.8, 0.1, 1.0, 0.0), true)?,
        &wave(&[4, 3], 0.35, 0.4, 2.0, 0.0),
    )?)?;
    let grads = loss.backward()?;
    for (name, _) in &names {
        let g = grads
            .get(var(&varmap, name).as_tensor())
            .ok_or(format!("no gradient for {name}"))?;
        let norm = flat(g).iter().map(|x| x * x).sum::<f64>();
        assert!(norm > 0.0, "zero gradient for {name}");
    }
    Ok(())
}

#[test]
fn conv_regressor_and_hint_match_torch_in_train_mode() -> TestResult {
    let mut varmap = VarMap::new();
    let mut reg = conv_regressor(&mut varmap)?;
    let fs = Var::from_tensor(&student_feature())?;
    let teacher = Var::from_tensor(&teacher_feature())?;
    let loss = fitnet_loss(&reg.forward_t(fs.as_tensor(), true)?, teacher.as_tensor())?;
    // loss.item()
    assert_close(&[scalar(&loss)], &[1.8257861158270619]);

    let grads = loss.backward()?;
    assert!(
        grads.get(teacher.as_tensor()).is_none(),
        "teacher must be detached"
    );
    // fsv.grad.flatten().tolist()
    let expected_fs = [
        0.002925690259073052,
        0.0023625631207312902,
        -0.0022750542569892626,
        -0.008765547128044218,
        -0.016858851166178457,
        0.11462747577998325,
        0.1975005612167588,
        0.23112494930901592,
        0.2112292910334671,
        0.024966370097097224,
        -0.01597398098777885,
        -0.05076887625480432,
        -0.0720260297168579,
        -0.07717066765120899,
        -0.02431757191034406,
        -0.006252321365990354,
        0.007606425228770029,
        0.01486206424188713,
        0.010431259782438649,
        -0.010908605736901188,
        -0.024886176076676193,
        -0.029768210162452242,
        -0.024427275961396655,
        -0.1276373177099081,
        -0.20084553434820673,
        -0.22705552402787166,
        -0.2032781153181107,
        0.017211088803364805,
        0.01730801845618026,
        0.01040093495754111,
        -0.0007431783716998642,
        -0.07948284712907566,
        -0.1521663162199958,
        -0.18550703287250098,
        -0.19180145179403682,
        -0.16709029399759462,
        0.0002051305957726443,
        0.025963180052360244,
        0.049607556544221415,
        0.06676881249346306,
        0.05776740893528237,
        0.020829029644869716,
        0.011231679862342926,
        -0.006099942836154277,
        -0.027198266972928067,
        -0.017101343528710664,
        -0.0034177778274981814,
        0.016138991359476513,
        0.03646433663378642,
        0.11038827533452929,
        0.16330979518394356,
        0.1915159505466624,
        0.18853799143331257,
        0.15253928042358295,
    ];
    let g = grads.get(fs.as_tensor()).ok_or("no gradient for fs")?;
    assert_close(&flat(g), &expected_fs);

    // conv.weight.grad.flatten().tolist()
    let expected_w = [
        -0.00033533958819087495,
        0.00014168262010710864,
        0.0006186718135294811,
        -0.0006245548205560669,
        -0.0013009524841988557,
        -0.0019769740618984927,
        -0.022461329360999552,
        -0.019709111147172886,
        -0.016951321862049062,
        -0.0006897041228465656,
        -0.0003304772741370282,
        2.8849323728069587e-05,
    ];
    let w = var(&varmap, "regressor.pair0.conv.weight");
    assert_close(
        &flat(grads.get(w.as_tensor()).ok_or("no conv grad")?),
        &expected_w,
    );
    // bn.weight.grad.tolist(); bn.bias.grad.tolist()
    let gamma = var(&varmap, "regressor.pair0.bn.weight");
    let beta = var(&varmap, "regressor.pair0.bn.bias");
    assert_close(
        &flat(grads.get(gamma.as_tensor()).ok_or("no gamma grad")?),
        &[
            0.32019396611960477,
            0.3651968129554119,
            0.2031104914551077,
            0.31007797367215484,
        ],
    );
    assert_close(
        &flat(grads.get(beta.as_tensor()).ok_or("no beta grad")?),
        &[
            0.29843010356054306,
            0.3546230627954119,
            0.1812564943734656,
            0.2844335169400187,
        ],
    );
    Ok(())
}

#[test]
fn running_statistics_and_eval_mode_match_torch() -> TestResult {
    let mut varmap = VarMap::new();
    let mut reg = conv_regressor(&mut varmap)?;
    let fs = student_feature();
    let (mean0, var0) = reg.running_stats().ok_or("conv regressor has stats")?;
    assert_eq!(flat(mean0), vec![0.0; 4]);
    assert_eq!(flat(var0), vec![1.0; 4]);

    reg.forward_t(&fs, true)?;
    let (mean, var) = reg.running_stats().ok_or("conv regressor has stats")?;
    // bn.running_mean.tolist() (momentum 0.1, after one train-mode forward)
    assert_close(
        &flat(mean),
        &[
            0.07474086782178388,
            -0.04225778763059772,
            -0.01338828108360436,
            0.06169575973431596,
        ],
    );
    // bn.running_var.tolist() (unbiased batch variance)
    assert_close(
        &flat(var),
        &[
            1.0179503332177982,
            0.9377538160292677,
            0.9038335554368858,
            0.980369709003561,
        ],
    );
    let before = (flat(mean), flat(var));

    // bn.eval(); F.relu(bn(conv(fs)))[0, :2].flatten().tolist()
    let eval = reg.forward_t(&fs, false)?;
    let first_two_channels = eval.get(0)?.narrow(0, 0, 2)?;
    let expected = [
        1.2278880677568942,
        2.0453781137030655,
        2.2603030537784363,
        1.7715800853642782,
        0.8090634094620778,
        0.0,
        0.0,
        0.0,
        0.21591026152755252,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.24679377387255477,
        0.6266617421277187,
        0.541687611534624,
        0.0318361389222244,
    ];
    assert_close(&flat(&first_two_channels), &expected);
    // Eval mode leaves the running statistics alone.
    let (mean, var) = reg.running_stats().ok_or("conv regressor has stats")?;
    assert_eq!((flat(mean), flat(var)), before);
    Ok(())
}

#[test]
fn linear_regressor_hint_and_gradients_match_torch() -> TestResult {
    // xs = wave((4, 6), 0.8, 0.1); xt = wave((4, 3), 0.35, 0.4, 2.0)
    // lin = nn.Linear(6, 3).double()
    // with torch.no_grad():
    //     lin.weight.copy_(wave((3, 6), 0.55, -0.7, 0.4)); lin.bias.copy_(wave((3,), 1.7, 0.2, 0.3))
    // l2 = F.mse_loss(lin(xs), xt); l2.backward()
    let mut varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let mut reg = FitNetRegressor::linear(6, 3, vb.pp("regressor.fc"))?;
    varmap.set_one(
        "regressor.fc.linear.weight",
        wave(&[3, 6], 0.55, -0.7, 0.4, 0.0),
    )?;
    varmap.set_one("regressor.fc.linear.bias", wave(&[3], 1.7, 0.2, 0.3, 0.0))?;
    let proj = reg.forward_t(&wave(&[4, 6], 0.8, 0.1, 1.0, 0.0), true)?;
    let loss = fitnet_loss(&proj, &wave(&[4, 3], 0.35, 0.4, 2.0, 0.0))?;
    // l2.item()
    assert_close(&[scalar(&loss)], &[1.8771697554455693]);
    let grads = loss.backward()?;
    // lin.weight.grad.flatten().tolist()
    let expected_w = [
        0.11057020937651106,
        0.07490251481845421,
        -0.006200037603387339,
        -0.08354172857773104,
        -0.11020813411860138,
        -0.07002375431972004,
        0.8778553361971624,
        0.342155722193936,
        -0.4010909530906709,
        -0.9010412377155468,
        -0.8544320159995686,
        -0.28953577675475084,
        0.20579518819580034,
        -0.09260984442637457,
        -0.33483898349071856,
        -0.3739592807263497,
        -0.18624091384961777,
        0.11444870754923611,
    ];
    let w = var(&varmap, "regressor.fc.linear.weight");
    assert_close(
        &flat(grads.get(w.as_tensor()).ok_or("no grad")?),
        &expected_w,
    );
    // lin.bias.grad.tolist()
    let b = var(&varmap, "regressor.fc.linear.bias");
    assert_close(
        &flat(grads.get(b.as_tensor()).ok_or("no grad")?),
        &[
            -0.44605449408151493,
            -0.2644265849480334,
            -0.3190909218546175,
        ],
    );
    Ok(())
}

#[test]
fn hint_config_weights_the_loss_and_rejects_bad_values() -> TestResult {
    let (s, t) = (teacher_feature(), (teacher_feature() * 0.5)?);
    let cfg = FitNetConfig::default();
    assert_eq!(cfg.weight, 100.0);
    let weighted = scalar(&cfg.loss(&s, &t)?);
    let plain = scalar(&fitnet_loss(&s, &t)?);
    assert_close(&[weighted], &[100.0 * plain]);
    // ((0.5·t)²).mean() with t the teacher feature: the MSE of s = t against t/2.
    let expected = flat(&t).iter().map(|x| x * x).sum::<f64>() / 72.0;
    assert_close(&[plain], &[expected]);

    let parsed: FitNetConfig = serde_json::from_str(r#"{"weight": 5.0}"#)?;
    assert_eq!(parsed.weight, 5.0);
    assert_eq!(parsed.bn_momentum, 0.1);
    assert_eq!(parsed.bn_eps, 1e-5);
    for bad in [
        FitNetConfig {
            weight: -1.0,
            ..cfg
        },
        FitNetConfig {
            bn_momentum: 1.5,
            ..cfg
        },
        FitNetConfig { bn_eps: 0.0, ..cfg },
        FitNetConfig {
            weight: f64::NAN,
            ..cfg
        },
    ] {
        assert!(matches!(bad.validate(), Err(KdError::InvalidConfig(_))));
    }
    assert!(matches!(
        fitnet_loss(&s, &s.narrow(1, 0, 2)?),
        Err(KdError::ShapeMismatch(_))
    ));
    Ok(())
}
