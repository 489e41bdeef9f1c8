//! Fetching and loading through a fake hub on 127.0.0.1, with a temporary cache.

mod fake_hub;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use fake_hub::FakeHub;
use resnet_hub::{
    fetch_with, load_pretrained, load_pretrained_with, HfSpec, HubError, HubOptions, Layout,
    WeightsSource,
};
use resnet_models::{ArchSpec, BlockKind, ModelError, ResNet, Shortcut, Stem, StridePlacement};

/// A small ImageNet-style bottleneck net: the stem, a projection in every
/// stage's first block, a second block in stage 1, 10 classes.
fn tiny(widths: [usize; 4], blocks: [usize; 4]) -> ArchSpec {
    ArchSpec {
        id: "tiny".into(),
        block: BlockKind::Bottleneck,
        blocks_per_stage: blocks.to_vec(),
        widths: widths.to_vec(),
        stem: Stem::ImageNet,
        shortcut: Some(Shortcut::B),
        stride_placement: StridePlacement::V1_5,
        num_classes: 10,
        input_size: 32,
    }
}

const WIDTHS: [usize; 4] = [4, 8, 8, 8];
const BLOCKS: [usize; 4] = [2, 1, 1, 1];

fn input() -> Tensor {
    Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu).unwrap()
}

/// A model whose BN running statistics are not the initial ones.
fn trained_model(spec: &ArchSpec, x: &Tensor) -> ResNet {
    let model = ResNet::new(spec, 1, &Device::Cpu).unwrap();
    model.forward_t(x, true).unwrap();
    model
}

fn logits(model: &ResNet, x: &Tensor) -> Vec<Vec<f32>> {
    model.forward_t(x, false).unwrap().to_vec2().unwrap()
}

fn assert_same_logits(a: &ResNet, b: &ResNet, x: &Tensor) {
    let (a, b) = (logits(a, x), logits(b, x));
    for (ra, rb) in a.iter().zip(&b) {
        for (va, vb) in ra.iter().zip(rb) {
            assert!((va - vb).abs() <= 1e-6, "{a:?} != {b:?}");
        }
    }
}

/// The model's tensors under `rename`d names, with BN step counters as PyTorch saves them.
fn safetensors_bytes(model: &ResNet, rename: fn(&str) -> String, dir: &Path) -> Vec<u8> {
    let mut tensors: HashMap<String, Tensor> = model
        .state_tensors()
        .into_iter()
        .map(|(name, t)| (rename(&name), t))
        .collect();
    let counter = Tensor::new(5i64, &Device::Cpu).unwrap();
    tensors.insert(
        rename("bn1.running_mean").replace("running_mean", "num_batches_tracked"),
        counter,
    );
    let path = dir.join("file.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    std::fs::read(&path).unwrap()
}

/// The transformers name of a torchvision name (the inverse of the crate's rule table).
fn transformers_name(name: &str) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    match parts.as_slice() {
        ["conv1", "weight"] => "resnet.embedder.embedder.convolution.weight".into(),
        ["bn1", p] => format!("resnet.embedder.embedder.normalization.{p}"),
        ["fc", p] => format!("classifier.1.{p}"),
        [layer, l, module, rest @ ..] => {
            let stage: usize = layer.strip_prefix("layer").unwrap().parse().unwrap();
            let block = format!("resnet.encoder.stages.{}.layers.{l}", stage - 1);
            let k = |prefix: &str| module[prefix.len()..].parse::<usize>().unwrap() - 1;
            match (*module, rest) {
                ("downsample", ["0", p]) => format!("{block}.shortcut.convolution.{p}"),
                ("downsample", ["1", p]) => format!("{block}.shortcut.normalization.{p}"),
                (m, [p]) if m.starts_with("conv") => {
                    format!("{block}.layer.{}.convolution.{p}", k("conv"))
                }
                (m, [p]) if m.starts_with("bn") => {
                    format!("{block}.layer.{}.normalization.{p}", k("bn"))
                }
                _ => panic!("unexpected torchvision name {name}"),
            }
        }
        _ => panic!("unexpected torchvision name {name}"),
    }
}

fn serve(repo: &str, file: &str, bytes: Vec<u8>) -> FakeHub {
    FakeHub::start(HashMap::from([(
        (repo.to_string(), file.to_string()),
        bytes,
    )]))
}

fn options(endpoint: String, cache: &Path) -> HubOptions {
    HubOptions {
        endpoint: Some(endpoint),
        cache_dir: Some(cache.to_path_buf()),
    }
}

fn hf(spec: &str) -> WeightsSource {
    WeightsSource::parse(spec).unwrap()
}

#[test]
fn downloads_loads_identical_logits_then_reuses_the_cache_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let x = input();
    let spec = tiny(WIDTHS, BLOCKS);
    let source_model = trained_model(&spec, &x);
    let bytes = safetensors_bytes(&source_model, str::to_string, tmp.path());
    let hub = serve("test/tiny-timm", "model.safetensors", bytes);
    let options = options(hub.endpoint(), &cache);
    let source = hf("hf:test/tiny-timm");

    let model = ResNet::new(&spec, 2, &Device::Cpu).unwrap();
    let loaded = load_pretrained_with(&model, &source, &options).unwrap();
    assert!(loaded.path.starts_with(&cache), "{}", loaded.path.display());
    assert_eq!(loaded.layout, Layout::Torchvision);
    assert_eq!(loaded.registry_entry, None);
    assert_same_logits(&source_model, &model, &x);
    // hf-hub asks for the metadata, then for the content.
    assert_eq!(hub.stop(), 2);

    // The server is gone: the cached file answers.
    let offline = ResNet::new(&spec, 3, &Device::Cpu).unwrap();
    let again = load_pretrained_with(&offline, &source, &options).unwrap();
    assert_eq!(again.path, loaded.path);
    assert_same_logits(&source_model, &offline, &x);
}

#[test]
fn transformers_layout_round_trip_finds_the_registry_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let x = input();
    let spec = tiny(WIDTHS, BLOCKS);
    let source_model = trained_model(&spec, &x);
    let bytes = safetensors_bytes(&source_model, transformers_name, tmp.path());
    let hub = serve("microsoft/resnet-50", "model.safetensors", bytes);

    let model = ResNet::new(&spec, 2, &Device::Cpu).unwrap();
    let options = options(hub.endpoint(), &tmp.path().join("hub"));
    let loaded = load_pretrained_with(&model, &hf("hf:microsoft/resnet-50"), &options).unwrap();
    assert_eq!(loaded.layout, Layout::Transformers);
    assert_eq!(loaded.registry_entry.unwrap().name, "resnet50.microsoft");
    assert_same_logits(&source_model, &model, &x);
}

#[test]
fn unknown_repo_or_file_is_an_error_naming_both() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = serve("test/there", "model.safetensors", b"x".to_vec());
    let options = options(hub.endpoint(), &tmp.path().join("hub"));
    for spec in [
        "hf:nobody/missing",
        "hf:test/there/other.safetensors",
        "hf:test/there@v2",
    ] {
        let source = hf(spec);
        let err = fetch_with(&source, &options).unwrap_err();
        assert!(
            matches!(err, HubError::NotOnHub { status: 404, .. }),
            "{err:?}"
        );
        let WeightsSource::Hf(hf_spec) = &source else {
            unreachable!()
        };
        let msg = err.to_string();
        for part in [&hf_spec.repo, &hf_spec.file, &hf_spec.revision] {
            assert!(msg.contains(&format!("`{part}`")), "{msg}");
        }
    }
}

#[test]
fn an_invalid_repository_or_revision_is_refused_before_any_request() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = serve("a/b", "model.safetensors", b"x".to_vec());
    let options = options(hub.endpoint(), &tmp.path().join("hub"));
    let err = WeightsSource::parse("hf:../../etc/passwd").unwrap_err();
    assert!(matches!(err, HubError::InvalidSpec { .. }), "{err:?}");
    // Specs built by hand, which never went through `parse`, are checked too.
    for (repo, file, revision) in [
        ("../..", "etc/passwd", "main"),
        ("a/b", "../../etc/passwd", "main"),
        ("a/b", "model.safetensors", "../../x"),
    ] {
        let source = WeightsSource::Hf(HfSpec {
            repo: repo.into(),
            file: file.into(),
            revision: revision.into(),
        });
        let err = fetch_with(&source, &options).unwrap_err();
        assert!(matches!(err, HubError::InvalidSpec { .. }), "{err:?}");
    }
    assert_eq!(hub.stop(), 0, "no request may reach the server");
    assert!(!tmp.path().join("hub").exists(), "nothing is written");
}

#[test]
fn an_unreachable_server_is_a_download_error() {
    let tmp = tempfile::tempdir().unwrap();
    let endpoint = serve("a/b", "c", Vec::new()).endpoint();
    let err = fetch_with(&hf("hf:a/b"), &options(endpoint, tmp.path())).unwrap_err();
    assert!(matches!(err, HubError::Download { .. }), "{err:?}");
    assert!(err.to_string().contains("`a/b`"), "{err}");
}

#[test]
fn wrong_shapes_or_depth_are_errors_naming_a_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let x = input();
    let model = ResNet::new(&tiny(WIDTHS, BLOCKS), 2, &Device::Cpu).unwrap();

    let wider = trained_model(&tiny([8, 8, 8, 8], BLOCKS), &x);
    let path = tmp.path().join("wider.safetensors");
    wider.save(&path).unwrap();
    let err = load_pretrained(&model, &WeightsSource::Local(path), None).unwrap_err();
    assert!(
        matches!(&err, HubError::Model(ModelError::ShapeMismatch { name, .. }) if name == "conv1.weight"),
        "{err:?}"
    );
    assert!(err.to_string().contains("[8, 3, 7, 7]"), "{err}");
    assert!(err.to_string().contains("[4, 3, 7, 7]"), "{err}");

    let deeper = trained_model(&tiny(WIDTHS, [3, 1, 1, 1]), &x);
    let path = tmp.path().join("deeper.safetensors");
    deeper.save(&path).unwrap();
    let err = load_pretrained(&model, &WeightsSource::Local(path), None).unwrap_err();
    assert!(
        matches!(&err, HubError::Model(ModelError::UnexpectedTensor { name, .. }) if name.starts_with("layer1.2.")),
        "{err:?}"
    );
}

#[test]
fn a_missing_local_file_is_an_error_naming_it() {
    let model = ResNet::new(&tiny(WIDTHS, BLOCKS), 2, &Device::Cpu).unwrap();
    let source = WeightsSource::parse("no/such/weights.safetensors").unwrap();
    let err = load_pretrained(&model, &source, None).unwrap_err();
    assert!(matches!(err, HubError::NotFound { .. }), "{err:?}");
    assert!(
        err.to_string().contains("no/such/weights.safetensors"),
        "{err}"
    );
}

#[test]
fn known_weights_check_the_stride_placement_before_fetching() {
    let v1 = tiny(WIDTHS, BLOCKS).with_stride_placement(StridePlacement::V1);
    let model = ResNet::new(&v1, 2, &Device::Cpu).unwrap();
    // Nothing listens there: the check comes first.
    let err = load_pretrained(
        &model,
        &hf("hf:timm/resnet50.tv_in1k"),
        Some("http://127.0.0.1:9"),
    )
    .unwrap_err();
    assert!(matches!(err, HubError::StridePlacement { .. }), "{err:?}");
    assert!(err.to_string().contains("resnet50.tv_in1k"), "{err}");
    assert!(err.to_string().contains("v1.5"), "{err}");
}

#[test]
fn files_that_are_not_weights_are_read_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("junk.safetensors");
    std::fs::write(&path, b"definitely not tensors").unwrap();
    let model = ResNet::new(&tiny(WIDTHS, BLOCKS), 2, &Device::Cpu).unwrap();
    let err = load_pretrained(&model, &WeightsSource::Local(path), None).unwrap_err();
    assert!(matches!(err, HubError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("junk.safetensors"), "{err}");
}
