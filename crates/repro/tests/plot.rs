//! Tests of `resnet_repro::plot`: SVG and PNG output of multi-panel figures.

use std::collections::HashSet;
use std::path::Path;

use resnet_repro::plot::{Figure, LineStyle, Panel, Scale, Series, FIGURE_HEIGHT, PANEL_WIDTH};
use resnet_test_support::file_names;

/// A decaying error curve from `start`% to about `end`% over 64k iterations.
fn curve(start: f64, end: f64) -> Vec<(f64, f64)> {
    (0..=64)
        .map(|i| {
            let t = f64::from(i) * 1000.0;
            (t, end + (start - end) * (-t / 8000.0).exp())
        })
        .collect()
}

fn series(label: &str, points: Vec<(f64, f64)>, style: LineStyle, color: usize) -> Series {
    Series {
        label: label.into(),
        points,
        style,
        color,
    }
}

fn panel(title: &str, y_scale: Scale, y_range: Option<(f64, f64)>, series: Vec<Series>) -> Panel {
    Panel {
        title: title.into(),
        x_label: "iteration".into(),
        y_label: "error (%)".into(),
        y_scale,
        y_range,
        series,
    }
}

fn three_panels() -> Figure {
    let plain = (0..4)
        .flat_map(|c| {
            let depth = 20 + 12 * c;
            let gap = c as f64;
            [
                series(
                    &format!("plain-{depth} train"),
                    curve(90.0, 2.0 + gap),
                    LineStyle::Dashed,
                    c,
                ),
                series(
                    &format!("plain-{depth} test"),
                    curve(90.0, 8.0 + gap),
                    LineStyle::Bold,
                    c,
                ),
            ]
        })
        .collect();
    let mut with_nan = curve(90.0, 1.0);
    with_nan[3] = (f64::NAN, 5.0);
    with_nan[5] = (5000.0, f64::INFINITY);
    let resnets = vec![
        series("ResNet-20 train", with_nan, LineStyle::Dashed, 0),
        series("ResNet-20 test", curve(90.0, 8.5), LineStyle::Bold, 0),
    ];
    // Fig. 7-like: per-layer response std, on a log axis.
    let responses = ["plain-20", "ResNet-20", "ResNet-56"]
        .iter()
        .enumerate()
        .map(|(c, name)| {
            let layers = 18 + 36 * (c / 2);
            let points = (1..=layers)
                .map(|l| (l as f64, (3.0 - c as f64) / (1.0 + l as f64 / 10.0)))
                .collect();
            series(name, points, LineStyle::Points, c)
        })
        .collect();
    let mut layers = panel("layer responses", Scale::Log, Some((0.0, 10.0)), responses);
    layers.x_label = "layer index".into();
    layers.y_label = "std".into();
    Figure {
        title: "Fig. 6 (test): CIFAR-10 error vs iterations".into(),
        panels: vec![
            panel("plain nets", Scale::Linear, Some((0.0, 20.0)), plain),
            panel("residual nets", Scale::Linear, None, resnets),
            layers,
        ],
    }
}

/// Decodes a PNG file into (width, height, number of distinct colours).
fn decode_png(path: &Path) -> (u32, u32, usize) {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let pixels = &buf[..info.buffer_size()];
    let step = info.color_type.samples();
    let colors: HashSet<&[u8]> = pixels.chunks(step).collect();
    (info.width, info.height, colors.len())
}

#[test]
fn three_panel_figure_writes_valid_svg_and_png() {
    let dir = tempfile::tempdir().unwrap();
    let fig = three_panels();
    let (svg_path, png_path) = fig.write(dir.path(), "fig6").unwrap();
    assert_eq!(svg_path, dir.path().join("fig6.svg"));
    assert_eq!(png_path, dir.path().join("fig6.png"));
    assert_eq!(file_names(dir.path()), ["fig6.png", "fig6.svg"]);

    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("SVG is well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(root.attribute("width"), Some("1800"));
    assert_eq!(root.attribute("height"), Some("450"));
    let texts: Vec<&str> = doc.descendants().filter_map(|n| n.text()).collect();
    let has = |s: &str| texts.iter().any(|t| t.contains(s));
    for expected in [
        "Fig. 6 (test): CIFAR-10 error vs iterations",
        "plain nets",
        "residual nets",
        "layer responses",
        "layer index",
        "iteration",
        "error (%)",
        "plain-20 train",
        "plain-56 test",
        "ResNet-20 train",
        "ResNet-56",
    ] {
        assert!(has(expected), "SVG lacks text {expected:?}");
    }
    assert!(svg.contains("stroke-dasharray") || svg.matches("<polyline").count() > 100);

    let (width, height, colors) = decode_png(&png_path);
    assert_eq!((width, height), (3 * PANEL_WIDTH, FIGURE_HEIGHT));
    assert_eq!(fig.size(), (width, height));
    assert!(colors > 3, "PNG looks blank: {colors} colours");
}

#[test]
fn one_and_two_panels_with_degenerate_series() {
    let dir = tempfile::tempdir().unwrap();
    let odd = vec![
        series("empty", vec![], LineStyle::Dashed, 3),
        series("single", vec![(10.0, 5.0)], LineStyle::Bold, 4),
        series(
            "non-finite",
            vec![(f64::NAN, 1.0), (1.0, f64::NEG_INFINITY)],
            LineStyle::Points,
            5,
        ),
        series(
            "non-positive on log",
            vec![(1.0, 0.0), (2.0, -3.0)],
            LineStyle::Bold,
            9,
        ),
    ];
    for (n, scale) in [(1, Scale::Linear), (2, Scale::Log)] {
        let fig = Figure {
            title: format!("{n} panels"),
            panels: vec![panel("odd series", scale, None, odd.clone()); n],
        };
        let (_, png) = fig.write(dir.path(), &format!("odd{n}")).unwrap();
        let (width, height, _) = decode_png(&png);
        assert_eq!((width, height), (n as u32 * PANEL_WIDTH, FIGURE_HEIGHT));
    }
    let nothing = Figure {
        title: "no series".into(),
        panels: vec![panel("empty", Scale::Log, Some((-1.0, -2.0)), vec![])],
    };
    nothing.write(dir.path(), "nothing").unwrap();
    assert_eq!(
        file_names(dir.path()),
        [
            "nothing.png",
            "nothing.svg",
            "odd1.png",
            "odd1.svg",
            "odd2.png",
            "odd2.svg"
        ]
    );
}

#[test]
fn curves_are_cut_at_the_y_range() {
    let above = series("above", vec![(0.0, 50.0), (1.0, 60.0)], LineStyle::Bold, 7);
    let crossing = series(
        "crossing",
        vec![(0.0, 5.0), (1.0, 60.0)],
        LineStyle::Bold,
        1,
    );
    let fig = Figure {
        title: "clipped".into(),
        panels: vec![panel(
            "cut",
            Scale::Linear,
            Some((0.0, 10.0)),
            vec![above, crossing],
        )],
    };
    let svg = fig.to_svg().unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let polylines = |color: &str| {
        doc.descendants()
            .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke") == Some(color))
            .count()
    };
    // Okabe-Ito palette: index 7 is the dark yellow, 1 the blue.
    assert_eq!(polylines("#BEA500"), 0, "a curve above the range is drawn");
    assert_eq!(polylines("#0072B2"), 1);
}

#[test]
fn writing_into_a_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-folder");
    std::fs::write(&file, "x").unwrap();
    let err = three_panels().write(&file, "fig6").unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains(&file.display().to_string()),
        "error does not name the file: {message}"
    );
    assert_eq!(file_names(dir.path()), ["not-a-folder"]);
}

#[test]
fn a_figure_without_panels_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let fig = Figure {
        title: "empty".into(),
        panels: vec![],
    };
    assert!(fig.write(dir.path(), "empty").is_err());
    assert!(file_names(dir.path()).is_empty());
}

#[cfg(unix)]
#[test]
fn files_get_the_usual_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let reference = dir.path().join("reference");
    std::fs::File::create(&reference).unwrap();
    let (svg, png) = three_panels().write(dir.path(), "fig").unwrap();
    assert_eq!(mode(&svg), mode(&reference));
    assert_eq!(mode(&png), mode(&reference));
}

#[test]
fn overwriting_replaces_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let fig = three_panels();
    fig.write(dir.path(), "fig").unwrap();
    let (svg, _) = fig.write(dir.path(), "fig").unwrap();
    assert!(std::fs::read_to_string(svg).unwrap().ends_with("</svg>\n"));
    assert_eq!(file_names(dir.path()), ["fig.png", "fig.svg"]);
}
