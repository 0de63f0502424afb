//! Prints the path of the example plugin's shared library, for
//! `LASTMILE_PLUGINS=$(cargo run -q -p lastmile-example-npu) lastmile backends`.
#![forbid(unsafe_code)]

fn main() {
    println!("{}", lastmile_example_npu::PLUGIN);
}
