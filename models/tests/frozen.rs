//! Frozen (inference) models: the same logits as the trainable model, bit
//! for bit, with no graph recorded and no gradient reaching a variable; the
//! variables still load and batch norms still recalibrate.

mod common;

use std::collections::BTreeMap;

use candle_core::Device;
use kd_core::recalibrate_batch_norm;
use kdprune_models::checkpoint::Checkpoint;
use kdprune_models::{Model, ModelConfig};

use common::{bits, random_tensor, Inputs};

/// The networks a frozen build covers: an MLP (LeNet-300-100), LeNet-5 (both through
/// candle-nn's variable builder), a zoo ResNet and the elastic EfficientNet.
const NETWORKS: [(&str, (usize, usize, usize)); 4] = [
    ("lenet-300-100", (1, 8, 8)),
    ("lenet5", (1, 28, 28)),
    ("resnet20", (3, 32, 32)),
    ("efficientnet-b0-k7", (1, 28, 28)),
];

fn checkpoint(name: &str, input: (usize, usize, usize)) -> Checkpoint {
    let config = ModelConfig::from_name(name, input, 10).unwrap();
    let model = Model::new(config, 3, &Device::Cpu).unwrap();
    Checkpoint {
        config: model.config().clone(),
        tensors: model.tensors().unwrap(),
        masks: BTreeMap::new(),
        metadata: BTreeMap::new(),
        quantized: BTreeMap::new(),
    }
}

#[test]
fn frozen_logits_match_bit_for_bit_without_a_graph() {
    let dev = Device::Cpu;
    for (name, (c, h, w)) in NETWORKS {
        let ckpt = checkpoint(name, (c, h, w));
        let xs = random_tensor(&[2, c, h, w], 5, &dev);
        let trainable = ckpt.to_model(&dev).unwrap();
        let frozen = ckpt.to_frozen_model(&dev).unwrap();
        let a = trainable.forward_t(&xs, false).unwrap().logits;
        let b = frozen.forward_t(&xs, false).unwrap().logits;
        assert_eq!(bits(&a), bits(&b), "{name}: frozen logits differ");
        // the trainable model's logits hold the graph back to its variables;
        // the frozen model's hold nothing
        assert!(a.track_op(), "{name}: trainable logits record no graph");
        assert!(!b.track_op(), "{name}: frozen logits record a graph");
        let grads = b.sum_all().unwrap().backward().unwrap();
        for (var_name, var) in frozen.named_vars() {
            assert!(
                grads.get(var.as_tensor()).is_none(),
                "{name}: {var_name} got a gradient"
            );
        }
    }
}

#[test]
fn a_frozen_model_follows_its_variables() {
    // loading other values into the variables changes what the layers compute
    let dev = Device::Cpu;
    let config = ModelConfig::from_name("resnet20", (3, 32, 32), 10).unwrap();
    let frozen = Model::new_frozen(config.clone(), 0, &dev).unwrap();
    let other = Model::new(config, 9, &dev).unwrap();
    let xs = random_tensor(&[2, 3, 32, 32], 6, &dev);
    let before = bits(&frozen.forward_t(&xs, false).unwrap().logits);
    frozen.load_tensors(&other.tensors().unwrap()).unwrap();
    let after = bits(&frozen.forward_t(&xs, false).unwrap().logits);
    let want = bits(&other.forward_t(&xs, false).unwrap().logits);
    assert_ne!(before, after);
    assert_eq!(after, want);
}

#[test]
fn frozen_batch_norms_recalibrate_like_trainable_ones() {
    let dev = Device::Cpu;
    let ckpt = checkpoint("resnet20", (3, 32, 32));
    let trainable = ckpt.to_model(&dev).unwrap();
    let frozen = ckpt.to_frozen_model(&dev).unwrap();
    let inputs = Inputs((random_tensor(&[8, 3, 32, 32], 11, &dev) + 1.0).unwrap());
    for model in [&trainable, &frozen] {
        recalibrate_batch_norm(model, &inputs, 8, 4, 2).unwrap();
    }
    let (a, b) = (trainable.tensors().unwrap(), frozen.tensors().unwrap());
    assert!(
        bits(&a["bn1.running_mean"]) != bits(&ckpt.tensors["bn1.running_mean"]),
        "recalibration moved nothing"
    );
    for (name, t) in &a {
        assert_eq!(
            bits(t),
            bits(&b[name]),
            "{name} differs after recalibration"
        );
    }
}
