//! Fine-tunes a ResNet-18 on a folder of your own classes through the
//! library API: a short run gives the starting weights, then a second run
//! replaces the 1000-way head by a 3-way one, freezes the backbone and
//! trains the head; the class names travel with the weights.
//!
//! ```sh
//! cargo run --release -p resnet-train --example fine_tune -- [FOLDER] [WEIGHTS]
//! ```
//!
//! FOLDER is an image folder `FOLDER/<class>/<image>`; WEIGHTS a weights
//! file or run folder of a ResNet-18. Without them, both are generated (three
//! classes of small coloured pictures, and a two-step run from scratch): a
//! demonstration, not a result.

use std::path::{Path, PathBuf};

use resnet_models::read_safetensors;
use resnet_train::{train, Freeze, NoObserver, NormalizationKind, TrainConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    run(std::env::args().skip(1).collect())
}

/// The example with its command-line arguments `args`.
fn run(args: Vec<String>) -> Result<(), Box<dyn std::error::Error>> {
    let work = tempfile::tempdir()?;
    let mut args = args.into_iter();
    let folder = match args.next() {
        Some(folder) => PathBuf::from(folder),
        None => generated_folder(&work.path().join("mine"), &["cat_a", "dog_b", "eel_c"])?,
    };
    let short = TrainConfig {
        arch: "resnet18".into(),
        iterations: 2,
        batch_size: 2,
        eval_every: 0,
        checkpoint_every: 0,
        // torchvision's constants: no pass over the folder for a mean image.
        normalization: NormalizationKind::PerChannel,
        ..TrainConfig::imagenet()
    };
    let weights = match args.next() {
        Some(weights) => PathBuf::from(weights),
        None => {
            let source = work.path().join("source");
            let data = generated_folder(&work.path().join("other"), &["ant", "bee"])?;
            train(
                &TrainConfig {
                    data,
                    ..short.clone()
                },
                &source,
                &mut NoObserver,
            )?;
            source
        }
    };

    let classes = std::fs::read_dir(&folder)?
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().is_dir()))
        .count();
    let tuned = work.path().join("tuned");
    let config = TrainConfig {
        data: folder,
        weights: Some(weights),
        num_classes: Some(classes),
        freeze: Freeze::Backbone,
        ..short
    };
    let summary = train(&config, &tuned, &mut NoObserver)?;
    let (_, metadata) = read_safetensors(&tuned.join("model.safetensors"))?;
    let names = metadata
        .and_then(|m| m.classes)
        .ok_or("the weights name no classes")?;
    println!(
        "{}: {} iterations, training loss {:.3}; its outputs are {}",
        summary.arch,
        summary.iterations,
        summary.final_train_loss,
        names.join(", ")
    );
    Ok(())
}

/// Writes `root/<class>/<i>.png`, two small pictures per class, each class its own colour.
fn generated_folder(root: &Path, classes: &[&str]) -> Result<PathBuf, image::ImageError> {
    for (c, class) in classes.iter().enumerate() {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir)?;
        for i in 0..2u32 {
            let shade = (80 * c as u32 + 9 * i) as u8;
            let picture = image::RgbImage::from_fn(40, 36, |x, y| {
                image::Rgb([shade, (x * 3) as u8 ^ shade, y as u8])
            });
            picture.save(dir.join(format!("{i}.png")))?;
        }
    }
    Ok(root.to_path_buf())
}

#[cfg(test)]
mod tests {
    /// The example runs as written, without arguments (CI runs it through `cargo test`).
    #[test]
    fn runs() {
        super::run(Vec::new()).unwrap();
    }
}
