//! Builds a network the paper does not list from the same spec table as the
//! zoo: a CIFAR-style ResNet with bottleneck blocks, four stages and 100
//! classes. Prints its layer table and counts, runs a batch through it and
//! saves it with its metadata (a custom id is recorded as it is; rebuilding
//! the net from the file takes this spec, as the zoo's ids take theirs).
//!
//! ```sh
//! cargo run --release -p resnet-models --example custom_arch
//! ```

use candle_core::{DType, Device, Tensor};
use resnet_models::{
    count, layer_table, read_safetensors, ArchSpec, BlockKind, ResNet, Shortcut, Stem,
    StridePlacement,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Every field of a net is data; the zoo's rows are values of this struct too.
    let spec = ArchSpec {
        id: "resnet29-bottleneck".into(),
        block: BlockKind::Bottleneck,
        blocks_per_stage: vec![3, 3, 3],
        widths: vec![16, 32, 64],
        stem: Stem::Cifar,
        shortcut: Some(Shortcut::B),
        stride_placement: StridePlacement::V1_5,
        num_classes: 100,
        input_size: 32,
    };
    for row in layer_table(&spec, spec.input_size) {
        println!(
            "{:8} {:>3}x{:<3} {}",
            row.name, row.output, row.output, row.description
        );
    }
    let counts = count(&spec, spec.input_size);
    println!(
        "{}: {} parameters, {:.1} MFLOPs per image",
        spec.id,
        counts.params,
        counts.macs as f64 / 1e6
    );

    let net = ResNet::new(&spec, 0, &Device::Cpu)?;
    let x = Tensor::zeros((2, 3, 32, 32), DType::F32, &Device::Cpu)?;
    let logits = net.forward_t(&x, false)?;
    assert_eq!(logits.dims(), [2, 100]);
    assert_eq!(net.num_parameters(), counts.params);

    // The weights file says what net it holds.
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("custom.safetensors");
    net.save(&path)?;
    let (_, metadata) = read_safetensors(&path)?;
    let metadata = metadata.ok_or("no metadata in the saved file")?;
    println!(
        "saved as {} with {} classes, stride placement {}",
        metadata.arch, metadata.num_classes, metadata.stride_placement
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The example runs as written (CI runs it through `cargo test`).
    #[test]
    fn runs() {
        super::main().unwrap();
    }
}
