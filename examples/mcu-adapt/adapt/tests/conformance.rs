//! The shared conformance suite (12 op families × 8w8a / 16w8a, bit-exact against cpu-ref) on
//! the DSP kernel table, through its portable `smlad` (the host cannot run the `asm!`; the
//! firmware checks the real instruction against cpu-ref on the MCU, see `check_dsp`).
lastmile_conformance::conformance_suite!(mcu_adapt::dsp::CortexMDsp);
