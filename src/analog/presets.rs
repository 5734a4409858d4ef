//! Named `[analog]` presets (`analog.preset = "…"`), each value with its source (see also
//! `docs/analog.md`).

use super::config::AnalogSpec;
use anyhow::Result;

/// A named preset: its settings and where the values come from.
pub struct AnalogPreset {
    pub name: &'static str,
    pub source: &'static str,
    pub spec: fn() -> AnalogSpec,
}

/// The built-in presets.
pub const PRESETS: &[AnalogPreset] = &[
    AnalogPreset {
        name: "ideal-8bit",
        source: "ideal devices, 8-bit converters on every boundary (abs-max ranging)",
        spec: || AnalogSpec {
            dac_bits: Some(8),
            adc_bits: Some(8),
            error_bits: Some(8),
            ..AnalogSpec::default()
        },
    },
    AnalogPreset {
        name: "aihwkit-io",
        source: "aihwkit PresetIOParameters: 7-bit DAC (inp_res = 1/(2^7-2)), 9-bit ADC \
                 (out_res = 1/(2^9-2)), abs-max noise management; 7-bit DAC on the error \
                 current (the backward pass uses the same IO parameters)",
        spec: || AnalogSpec {
            dac_bits: Some(7),
            adc_bits: Some(9),
            error_bits: Some(7),
            ..AnalogSpec::default()
        },
    },
    AnalogPreset {
        name: "aihwkit-pcm",
        source: "PCM-like: aihwkit's PCM read-noise scale w_noise = 0.0175 taken as the \
                 relative device-to-device spread, 8-bit DAC/ADC/error converters",
        spec: || AnalogSpec {
            weight_std: Some(0.0175),
            dac_bits: Some(8),
            adc_bits: Some(8),
            error_bits: Some(8),
            ..AnalogSpec::default()
        },
    },
    AnalogPreset {
        name: "rram-constantstep",
        source: "aihwkit ConstantStepDevice defaults (dw_min 0.001, dw_min_dtod 0.3, \
                 dw_min_std 0.3, w_max = −w_min = 0.6, up_down 0) programmed with at most 31 \
                 pulses (PresetUpdateParameters.desired_bl), with aihwkit's PresetIOParameters \
                 converters (7-bit DAC, 9-bit ADC)",
        spec: rram_constantstep,
    },
    AnalogPreset {
        name: "rram-constantstep-pair",
        source: "rram-constantstep with every weight a differential pair w = G+ − G− of two \
                 such devices (aihwkit OneSidedUnitCell: up pulses only, G+ in [0, w_max], G− in \
                 [0, −w_min]); refresh thresholds 0.75 / 0.25 (OneSidedUnitCell defaults), \
                 checked after every optimiser step (refresh_every 1: aihwkit's default 0 never \
                 refreshes, and 1 mini-batch is its smallest unit with units_in_mbatch)",
        spec: || AnalogSpec {
            device_pair: Some("differential".into()),
            refresh_every: Some(1),
            refresh_upper_thres: Some(0.75),
            refresh_lower_thres: Some(0.25),
            ..rram_constantstep()
        },
    },
    AnalogPreset {
        name: "reram-softbounds",
        source: "aihwkit ReRamSBPresetDevice (SoftBounds fit to Gong et al., Nat. Commun. 2018): \
                 dw_min 0.002, w_max 1.25, w_min −0.75, dw_min_dtod 0.3, dw_min_std 3.75, \
                 up_down 0; 31 pulses at most; PresetIOParameters converters",
        spec: || AnalogSpec {
            device: Some("soft-bounds".into()),
            dw_min: Some(0.002),
            dw_min_dtod: Some(0.3),
            dw_min_std: Some(3.75),
            up_down: Some(0.0),
            w_max: Some(1.25),
            w_min: Some(-0.75),
            max_pulses: Some(31),
            dac_bits: Some(7),
            adc_bits: Some(9),
            error_bits: Some(7),
            ..AnalogSpec::default()
        },
    },
];

/// aihwkit's ConstantStepDevice defaults with its PresetIOParameters converters.
fn rram_constantstep() -> AnalogSpec {
    AnalogSpec {
        device: Some("constant-step".into()),
        dw_min: Some(0.001),
        dw_min_dtod: Some(0.3),
        dw_min_std: Some(0.3),
        up_down: Some(0.0),
        w_max: Some(0.6),
        max_pulses: Some(31),
        dac_bits: Some(7),
        adc_bits: Some(9),
        error_bits: Some(7),
        ..AnalogSpec::default()
    }
}

/// The preset named `name`.
pub fn analog_preset(name: &str) -> Result<&'static AnalogPreset> {
    PRESETS.iter().find(|p| p.name == name).ok_or_else(|| {
        let names: Vec<_> = PRESETS.iter().map(|p| p.name).collect();
        anyhow::anyhow!(
            "analog.preset: unknown analog preset `{name}` (known: {})",
            names.join(", ")
        )
    })
}
