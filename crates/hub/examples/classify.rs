//! Classifies an image with pretrained weights: one call loads the net, its
//! weights, its preprocessing and its class names; one more classifies.
//!
//! ```sh
//! cargo run --release -p resnet-hub --example classify -- resnet50.tv_in1k resnet50 photo.jpg
//! ```
//!
//! WEIGHTS is a registry name, `hf:OWNER/REPO[/FILE][@REV]` (fetched into the
//! Hugging Face cache) or a weights file; ARCH the net they fit; a last
//! `v1` or `v1.5` gives the stride placement of ResNet-50/101/152 weights the
//! registry does not know (known ones carry theirs). Without
//! arguments the example needs no network: it saves a randomly initialised
//! ResNet-18 (torchvision's v1.5 layout) and classifies a generated image
//! with it, so the classes it prints mean nothing.

use candle_core::Device;
use image::RgbImage;
use resnet_data::load_rgb;
use resnet_hub::{load_model, HubOptions};
use resnet_models::{ArchSpec, ResNet, StridePlacement};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    run(&std::env::args().skip(1).collect::<Vec<_>>())
}

/// The example with its command-line arguments `args`.
fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let scratch = tempfile::tempdir()?;
    let (weights, arch, placement, image) = match args {
        [weights, arch, image, placement @ ..] if placement.len() <= 1 => (
            weights.clone(),
            ArchSpec::from_id(arch)?,
            placement.first().map(|p| p.parse()).transpose()?,
            load_rgb(image.as_ref())?,
        ),
        [] => {
            let spec = ArchSpec::from_id("resnet18")?.with_stride_placement(StridePlacement::V1_5);
            let path = scratch.path().join("resnet18-random.safetensors");
            ResNet::new(&spec, 0, &Device::Cpu)?.save(&path)?;
            let image = RgbImage::from_fn(320, 240, |x, y| image::Rgb([x as u8, y as u8, 128]));
            let placement = Some(StridePlacement::V1_5);
            (path.display().to_string(), spec, placement, image)
        }
        _ => return Err("usage: classify [WEIGHTS ARCH IMAGE [v1|v1.5]]".into()),
    };
    let model = load_model(
        &weights,
        &arch,
        placement,
        &Device::Cpu,
        &HubOptions::default(),
    )?;
    for p in model.classify(&image, 5)? {
        let name = p.name.as_deref().unwrap_or("-");
        println!("{:6.2}%  {:4} {name}", 100.0 * p.probability, p.class);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The example runs as written, without arguments and offline (CI runs it through `cargo test`).
    #[test]
    fn runs_offline() {
        super::run(&[]).unwrap();
    }
}
