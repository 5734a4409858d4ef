//! Kernels of a weight held by a differential pair of pulsed conductances (aihwkit's
//! `OneSidedUnitCell`): `w = G⁺ − G⁻`, `G⁺ ∈ [0, g⁺_max]`, `G⁻ ∈ [0, g⁻_max]`.
//!
//! * **one-sided update** — a desired change `Δ = w* − (G⁺ − G⁻)` fires
//!   `n = min(round(|Δ|/dw), max_pulses)` *up* pulses on `G⁺` when `Δ > 0` and on `G⁻` when
//!   `Δ < 0` (each device with its own step `dw` and response, [`super::analog::PulseResponse`]);
//!   neither conductance is ever pulsed down;
//! * **refresh** — a pair is refreshed when its larger conductance (relative to its bound) is
//!   above `upper` and its smaller one above `lower`:
//!   `G⁺/g⁺_max > upper ∧ G⁻/g⁻_max > lower` if `G⁺ > G⁻`, else
//!   `G⁺/g⁺_max > lower ∧ G⁻/g⁻_max > upper` (aihwkit's `refreshCriterion`). The refresh reads
//!   `w = G⁺ − G⁻`, resets both conductances to 0 and writes `|w|` back onto `G⁺` (`w > 0`) or
//!   `G⁻` (`w < 0`) with `round(|w|/dw)` up pulses (no pulse limit: an open-loop rewrite).

use super::analog::{fire, PulseResponse};
use super::tensor::{ShapeError, Tensor};
use rand::Rng;

/// The refresh criterion of [`refresh_pair`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RefreshThresholds {
    pub upper: f32,
    pub lower: f32,
}

fn same_shapes(
    op: &'static str,
    w: &Tensor,
    others: &[(&Tensor, &'static str)],
) -> Result<(), ShapeError> {
    for (t, name) in others {
        if t.shape() != w.shape() {
            return Err(ShapeError::new(
                op,
                name,
                t.shape(),
                format!("{:?} (the weight's)", w.shape()),
            ));
        }
    }
    Ok(())
}

/// The pair holding `w` as aihwkit sets weights: `G⁺ = clamp(w, 0, g⁺_max)`,
/// `G⁻ = clamp(−w, 0, g⁻_max)`.
pub fn pair_from_weights(w: &Tensor, g_plus_max: f32, g_minus_max: f32) -> (Tensor, Tensor) {
    let mut gp = w.clone();
    let mut gm = w.clone();
    gp.data_mut()
        .iter_mut()
        .for_each(|v| *v = v.clamp(0.0, g_plus_max));
    gm.data_mut()
        .iter_mut()
        .for_each(|v| *v = (-*v).clamp(0.0, g_minus_max));
    (gp, gm)
}

/// `w ← G⁺ − G⁻` element-wise.
pub fn pair_weights(w: &mut Tensor, gp: &Tensor, gm: &Tensor) -> Result<(), ShapeError> {
    same_shapes("pair_weights", w, &[(gp, "G+"), (gm, "G-")])?;
    for ((v, &p), &m) in w.data_mut().iter_mut().zip(gp.data()).zip(gm.data()) {
        *v = p - m;
    }
    Ok(())
}

/// One-sided programming of the pairs towards `target` (see the module doc): `G⁺` with steps
/// `dwp` and response `rp`, `G⁻` with `dwm` and `rm`. Returns the pulses fired.
#[allow(clippy::too_many_arguments)]
pub fn program_pair(
    gp: &mut Tensor,
    gm: &mut Tensor,
    target: &Tensor,
    dwp: &Tensor,
    dwm: &Tensor,
    rp: &PulseResponse,
    rm: &PulseResponse,
    rng: &mut impl Rng,
) -> Result<u64, ShapeError> {
    same_shapes(
        "program_pair",
        target,
        &[
            (gp, "G+"),
            (gm, "G-"),
            (dwp, "G+ device steps"),
            (dwm, "G- device steps"),
        ],
    )?;
    let mut fired = 0u64;
    let (gp, gm) = (gp.data_mut(), gm.data_mut());
    for i in 0..target.len() {
        let delta = target.data()[i] - (gp[i] - gm[i]);
        let (g, d, r) = if delta > 0.0 {
            (&mut gp[i], dwp.data()[i], rp)
        } else {
            (&mut gm[i], dwm.data()[i], rm)
        };
        if d <= 0.0 || delta == 0.0 {
            continue;
        }
        let n = (delta.abs() / d).round().min(r.max_pulses as f32) as u32;
        fire(g, n, true, d, r, rng);
        fired += n as u64;
    }
    Ok(fired)
}

/// What a refresh did: pairs refreshed and pulses fired rewriting them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refreshed {
    pub pairs: u64,
    pub pulses: u64,
}

/// Refreshes every pair that meets the criterion (see the module doc); the rewrite fires
/// `round(|w|/dw)` up pulses on the conductance that takes `|w|`.
#[allow(clippy::too_many_arguments)]
pub fn refresh_pair(
    gp: &mut Tensor,
    gm: &mut Tensor,
    dwp: &Tensor,
    dwm: &Tensor,
    rp: &PulseResponse,
    rm: &PulseResponse,
    th: RefreshThresholds,
    rng: &mut impl Rng,
) -> Result<Refreshed, ShapeError> {
    same_shapes(
        "refresh_pair",
        gp,
        &[
            (gm, "G-"),
            (dwp, "G+ device steps"),
            (dwm, "G- device steps"),
        ],
    )?;
    let mut done = Refreshed::default();
    let (gp, gm) = (gp.data_mut(), gm.data_mut());
    for i in 0..gp.len() {
        let (a, b) = (gp[i] / rp.hi, gm[i] / rm.hi);
        let due = if gp[i] > gm[i] {
            a > th.upper && b > th.lower
        } else {
            a > th.lower && b > th.upper
        };
        if !due {
            continue;
        }
        let w = gp[i] - gm[i];
        gp[i] = 0.0;
        gm[i] = 0.0;
        let (g, d, r) = if w > 0.0 {
            (&mut gp[i], dwp.data()[i], rp)
        } else {
            (&mut gm[i], dwm.data()[i], rm)
        };
        let n = if d > 0.0 {
            (w.abs() / d).round() as u32
        } else {
            0
        };
        fire(g, n, true, d, r, rng);
        done.pairs += 1;
        done.pulses += n as u64;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn cs(hi: f32, write_noise: f32, up_down: f32) -> PulseResponse {
        PulseResponse {
            soft_bounds: false,
            lo: 0.0,
            hi,
            up_down,
            write_noise,
            max_pulses: 31,
        }
    }

    #[test]
    fn pulses_only_ever_raise_the_conductance_on_the_side_of_the_update() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let n = 2000;
        let w0 = super::super::analog::standard_normal(&[n], &mut rng);
        let (mut gp, mut gm) = pair_from_weights(&w0, 0.6, 0.6);
        let dwp = Tensor::full(&[n], 0.01);
        let dwm = Tensor::full(&[n], 0.012);
        // asymmetric devices with write noise: the step is dw·1.2·(1 + 0.3ξ) on either side
        let (rp, rm) = (cs(0.6, 0.3, 0.2), cs(0.6, 0.3, 0.2));
        let mut w = Tensor::zeros(&[n]);
        for step in 0..20 {
            let target = {
                let mut t = super::super::analog::standard_normal(&[n], &mut rng);
                t.data_mut().iter_mut().for_each(|v| *v *= 0.05);
                pair_weights(&mut w, &gp, &gm).unwrap();
                for (a, b) in t.data_mut().iter_mut().zip(w.data()) {
                    *a += b;
                }
                t
            };
            let (p0, m0) = (gp.clone(), gm.clone());
            let fired =
                program_pair(&mut gp, &mut gm, &target, &dwp, &dwm, &rp, &rm, &mut rng).unwrap();
            let mut want = 0u64;
            for i in 0..n {
                let delta = target.data()[i] - (p0.data()[i] - m0.data()[i]);
                // the other side is untouched bit for bit; the pulsed side fired round(|Δ|/dw)
                if delta > 0.0 {
                    assert_eq!(gm.data()[i], m0.data()[i], "step {step}, {i}");
                    want += (delta / 0.01).round().min(31.0) as u64;
                } else {
                    assert_eq!(gp.data()[i], p0.data()[i], "step {step}, {i}");
                    want += (-delta / 0.012).round().min(31.0) as u64;
                }
                assert!(gp.data()[i] >= 0.0 && gp.data()[i] <= 0.6);
                assert!(gm.data()[i] >= 0.0 && gm.data()[i] <= 0.6);
            }
            assert_eq!(fired, want);
        }
        // without write noise, no conductance ever decreases
        let (rp, rm) = (cs(0.6, 0.0, -0.3), cs(0.6, 0.0, -0.3));
        for _ in 0..10 {
            let target = super::super::analog::standard_normal(&[n], &mut rng);
            let (p0, m0) = (gp.clone(), gm.clone());
            program_pair(&mut gp, &mut gm, &target, &dwp, &dwm, &rp, &rm, &mut rng).unwrap();
            assert!(gp.data().iter().zip(p0.data()).all(|(a, b)| a >= b));
            assert!(gm.data().iter().zip(m0.data()).all(|(a, b)| a >= b));
        }
        // an up step is dw·(1 + up_down), whichever side: 3 pulses of 0.007 on G−
        let (mut p, mut m) = (Tensor::full(&[1], 0.1), Tensor::full(&[1], 0.0));
        let t = Tensor::full(&[1], 0.07);
        let f = program_pair(
            &mut p,
            &mut m,
            &t,
            &Tensor::full(&[1], 0.01),
            &Tensor::full(&[1], 0.01),
            &rp,
            &rm,
            &mut rng,
        )
        .unwrap();
        assert_eq!(f, 3);
        assert_eq!(p.data()[0], 0.1);
        assert!((m.data()[0] - 0.021).abs() < 1e-7, "{:?}", m.data());
    }

    #[test]
    fn refresh_triggers_at_the_thresholds_and_keeps_the_weight() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let th = RefreshThresholds {
            upper: 0.75,
            lower: 0.25,
        };
        let r = cs(0.6, 0.0, 0.0);
        // (G+, G−) relative to 0.6: (0.83, 0.33) due → w 0.3 = 30 pulses on G+;
        // (0.33, 0.9) due → w −0.34 = 34 pulses on G−; (0.83, 0.17) not due (G− below lower);
        // (0.5, 0.7) not due (the larger below upper); (0.78, 0.77): due, w 0.006 = 1 pulse
        let gp0 = [0.5f32, 0.2, 0.5, 0.3, 0.468];
        let gm0 = [0.2f32, 0.54, 0.1, 0.42, 0.462];
        let mut gp = Tensor::from_vec(&[5], gp0.to_vec()).unwrap();
        let mut gm = Tensor::from_vec(&[5], gm0.to_vec()).unwrap();
        let dw = Tensor::full(&[5], 0.01);
        let done = refresh_pair(&mut gp, &mut gm, &dw, &dw, &r, &r, th, &mut rng).unwrap();
        assert_eq!(
            done,
            Refreshed {
                pairs: 3,
                pulses: 30 + 34 + 1
            }
        );
        let want_p = [0.3f32, 0.0, 0.5, 0.3, 0.01];
        let want_m = [0.0f32, 0.34, 0.1, 0.42, 0.0];
        for i in 0..5 {
            assert!((gp.data()[i] - want_p[i]).abs() < 1e-6, "{:?}", gp.data());
            assert!((gm.data()[i] - want_m[i]).abs() < 1e-6, "{:?}", gm.data());
            // w kept to within half a pulse
            let w0 = gp0[i] - gm0[i];
            let w1 = gp.data()[i] - gm.data()[i];
            assert!((w1 - w0).abs() <= 0.005 + 1e-6, "{i}: {w0} → {w1}");
        }
        // with write noise the rewrite of n pulses keeps w within ~σ_c·dw·√n
        let noisy = cs(0.6, 0.3, 0.0);
        let n = 20_000;
        let mut gp = Tensor::full(&[n], 0.55);
        let mut gm = Tensor::full(&[n], 0.25);
        let dw = Tensor::full(&[n], 0.01);
        let done = refresh_pair(&mut gp, &mut gm, &dw, &dw, &noisy, &noisy, th, &mut rng).unwrap();
        assert_eq!(done.pulses, 30 * n as u64);
        let err: Vec<f64> = gp.data().iter().map(|&v| v as f64 - 0.3).collect();
        let mean = err.iter().sum::<f64>() / n as f64;
        let sd = (err.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        let want = 0.3 * 0.01 * 30f64.sqrt();
        assert!(mean.abs() < 5.0 * want / (n as f64).sqrt(), "{mean}");
        assert!((sd - want).abs() < 0.05 * want, "{sd} vs {want}");
        assert!(gm.data().iter().all(|&v| v == 0.0));
    }
}
