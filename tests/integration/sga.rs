//! The static-gradient-analysis preset at initialisation (the paper's Fig. 3 setting):
//! EP agrees with ID-exact on every tensor, and with ID-reference except where the
//! reference ignores a weight's top-down use (the paper reports 0.986 on the dense layer).

use crate::common;
use common::*;
use ffebm::grad::*;
use ffebm::model::{prepare, presets::preset, Model, ParamId};

#[test]
fn static_gradient_analysis_ep_agrees_with_id() {
    let p = preset("static_gradient_analysis", None).unwrap();
    let model = Model::new(p.model.clone(), 0).unwrap();
    let kern = prepare(&model).unwrap();
    let (x, y) = batch(&model, 2, 1);
    let cfg = AlgoConfig::ep(15, 20, 0.02);
    let ep = compute_gradients(&model, &kern, &x, &y, &cfg.with(Algorithm::Ep)).unwrap();
    let id = compute_gradients(&model, &kern, &x, &y, &cfg.with(Algorithm::IdExact)).unwrap();
    let idr = compute_gradients(&model, &kern, &x, &y, &cfg.with(Algorithm::IdReference)).unwrap();
    for (pid, g) in &ep.grads.entries {
        if matches!(
            pid,
            ParamId::Synapse { bias: false, .. } | ParamId::Readout { bias: false }
        ) {
            let name = model.param_name(*pid);
            let c = cosine(g, id.grads.get(*pid));
            assert!(c >= 0.99, "{name}: EP vs ID-exact cosine {c}");
            let c = cosine(g, idr.grads.get(*pid));
            assert!(c >= 0.98, "{name}: EP vs ID-reference cosine {c}");
        }
    }
}
