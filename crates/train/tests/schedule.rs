//! Tests of the learning-rate schedules: exact rates at the boundaries,
//! warm-up switching, plateau reductions, serde of configs and state.

use resnet_train::{
    LrSchedule, PlateauState, ScheduleConfig, Scheduler, SchedulerState, TrainError, Warmup,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[test]
fn cifar_step_schedule_boundaries() -> TestResult {
    let s = Scheduler::new(ScheduleConfig::cifar())?;
    assert!(!s.in_warmup());
    assert_eq!(s.lr_at(0), 0.1);
    assert_eq!(s.lr_at(31_999), 0.1);
    assert_eq!(s.lr_at(32_000), 0.1 * 0.1);
    assert_eq!(s.lr_at(47_999), 0.1 * 0.1);
    assert_eq!(s.lr_at(48_000), 0.1 * 0.1 * 0.1);
    assert_eq!(s.lr_at(63_999), 0.1 * 0.1 * 0.1);
    assert_eq!(s.lr_at(u64::MAX), 0.1 * 0.1 * 0.1);
    Ok(())
}

#[test]
fn step_schedule_ignores_observations() -> TestResult {
    let mut s = Scheduler::new(ScheduleConfig::cifar())?;
    assert!(!s.observe_train_error(0.1));
    for _ in 0..100 {
        assert!(!s.observe_val_error(0.5));
    }
    assert_eq!(s.lr_at(100), 0.1);
    assert_eq!(s.state().plateau, None);
    Ok(())
}

#[test]
fn resnet110_warmup_switches_once_below_threshold() -> TestResult {
    let mut s = Scheduler::new(ScheduleConfig::cifar_resnet110())?;
    assert!(s.in_warmup());
    assert_eq!(s.lr_at(0), 0.01);
    // Warm-up ignores the step milestones.
    assert_eq!(s.lr_at(40_000), 0.01);
    assert!(!s.observe_train_error(0.9));
    // 0.8 is not below 0.8.
    assert!(!s.observe_train_error(0.8));
    assert_eq!(s.lr_at(399), 0.01);
    assert!(s.observe_train_error(0.79));
    assert!(!s.in_warmup());
    assert_eq!(s.lr_at(400), 0.1);
    // For good: a later higher training error does not bring it back.
    assert!(!s.observe_train_error(0.95));
    assert!(!s.in_warmup());
    assert_eq!(s.lr_at(401), 0.1);
    // Milestones are absolute iterations.
    assert_eq!(s.lr_at(31_999), 0.1);
    assert_eq!(s.lr_at(32_000), 0.1 * 0.1);
    Ok(())
}

fn plateau(patience: u64, threshold: f64, min_lr: f64) -> ScheduleConfig {
    ScheduleConfig {
        schedule: LrSchedule::Plateau {
            base_lr: 0.1,
            factor: 0.1,
            patience,
            threshold,
            min_lr,
        },
        warmup: None,
    }
}

#[test]
fn plateau_reduces_after_patience_observations_without_improvement() -> TestResult {
    let mut s = Scheduler::new(plateau(3, 0.01, 0.0))?;
    assert_eq!(s.lr_at(0), 0.1);
    // (error, reduced?, lr after)
    let script = [
        (0.50, false, 0.1),      // first: best = 0.50
        (0.45, false, 0.1),      // improvement: best = 0.45
        (0.445, false, 0.1),     // within threshold: bad 1
        (0.46, false, 0.1),      // bad 2
        (0.44, true, 0.1 * 0.1), // 0.44 is not < 0.45 - 0.01: bad 3 -> reduce
    ];
    for (i, (err, reduced, lr)) in script.into_iter().enumerate() {
        assert_eq!(s.observe_val_error(err), reduced, "observation {i}");
        assert_eq!(s.lr_at(i as u64), lr, "observation {i}");
    }
    assert_eq!(s.lr_at(10), 0.1 * 0.1);
    let state = s.state().plateau.unwrap();
    assert_eq!(state.best, Some(0.45));
    assert_eq!(state.num_bad, 0);

    // Counting restarts after a reduction; an improvement resets it.
    assert!(!s.observe_val_error(0.5)); // bad 1
    assert!(!s.observe_val_error(0.5)); // bad 2
    assert!(!s.observe_val_error(0.30)); // improvement, best 0.30
    assert!(!s.observe_val_error(0.30)); // bad 1
    assert!(!s.observe_val_error(0.30)); // bad 2
    assert_eq!(s.lr_at(20), 0.1 * 0.1);
    assert!(s.observe_val_error(0.30)); // bad 3 -> reduce
    assert_eq!(s.lr_at(20), 0.1 * 0.1 * 0.1);
    Ok(())
}

#[test]
fn plateau_respects_min_lr() -> TestResult {
    let mut s = Scheduler::new(plateau(1, 0.0, 0.005))?;
    assert!(!s.observe_val_error(0.5));
    assert!(s.observe_val_error(0.5)); // 0.1 -> 0.01
    assert_eq!(s.lr_at(0), 0.1 * 0.1);
    assert!(s.observe_val_error(0.5)); // 0.01 -> max(0.001, 0.005)
    assert_eq!(s.lr_at(0), 0.005);
    assert!(!s.observe_val_error(0.5)); // already at the floor
    assert_eq!(s.lr_at(0), 0.005);
    Ok(())
}

#[test]
fn plateau_treats_nan_as_no_improvement() -> TestResult {
    let mut s = Scheduler::new(plateau(2, 0.0, 0.0))?;
    assert!(!s.observe_val_error(f64::NAN));
    assert!(s.observe_val_error(f64::NAN));
    assert_eq!(s.state().plateau.unwrap().best, None);
    assert!(!s.observe_val_error(0.7));
    assert_eq!(s.state().plateau.unwrap().best, Some(0.7));
    Ok(())
}

#[test]
fn plateau_waits_for_the_warmup() -> TestResult {
    let mut config = plateau(1, 0.0, 0.0);
    config.warmup = Some(Warmup::default());
    let mut s = Scheduler::new(config)?;
    for _ in 0..5 {
        assert!(!s.observe_val_error(0.9));
    }
    assert_eq!(s.lr_at(0), 0.01);
    assert!(s.observe_train_error(0.5));
    assert_eq!(s.lr_at(0), 0.1);
    assert!(!s.observe_val_error(0.9));
    assert!(s.observe_val_error(0.9));
    assert_eq!(s.lr_at(0), 0.1 * 0.1);
    Ok(())
}

/// Drives a scheduler through a scripted run; returns the lr of each
/// iteration. Training errors fall, validation errors stall.
fn drive(s: &mut Scheduler, iterations: std::ops::Range<u64>) -> Vec<f64> {
    iterations
        .map(|i| {
            let lr = s.lr_at(i);
            s.observe_train_error(1.0 - i as f64 / 100.0);
            if i % 5 == 4 {
                s.observe_val_error(0.6 - 0.1 * (i as f64 / 30.0).floor());
            }
            lr
        })
        .collect()
}

#[test]
fn resumed_scheduler_continues_identically() -> TestResult {
    let configs = [
        ScheduleConfig {
            schedule: LrSchedule::Step {
                base_lr: 0.1,
                milestones: vec![40, 70],
                gamma: 0.1,
            },
            warmup: Some(Warmup::default()),
        },
        ScheduleConfig {
            warmup: Some(Warmup::default()),
            ..plateau(2, 0.01, 1e-4)
        },
    ];
    for config in configs {
        let mut full = Scheduler::new(config.clone())?;
        let uninterrupted = drive(&mut full, 0..100);

        let mut first = Scheduler::new(config.clone())?;
        let mut resumed = drive(&mut first, 0..13);
        assert!(first.in_warmup(), "checkpoint inside the warm-up");
        let json = serde_json::to_string(&first.state())?;
        let mut second = Scheduler::new(config.clone())?;
        second.load_state(serde_json::from_str(&json)?)?;
        resumed.extend(drive(&mut second, 13..57));
        let toml = toml::to_string(&second.state())?;
        let mut third = Scheduler::new(config)?;
        third.load_state(toml::from_str(&toml)?)?;
        resumed.extend(drive(&mut third, 57..100));

        assert_eq!(resumed, uninterrupted);
        assert_eq!(third.state(), full.state());
        assert!(uninterrupted[99] < 0.01, "the schedule reduced the rate");
    }
    Ok(())
}

#[test]
fn the_warmup_ends_on_the_mean_of_a_full_window_of_batch_errors() -> TestResult {
    let mut s = Scheduler::new(ScheduleConfig::cifar_resnet110())?.with_train_error_window(3)?;
    // Two batches well below the threshold: the window is not full yet.
    assert_eq!(s.observe_batch_error(0.1), None);
    assert_eq!(s.observe_batch_error(0.1), None);
    // 0.95 makes the mean 0.3833 < 0.8: the warm-up ends on a full window.
    let ended = s.observe_batch_error(0.95).expect("the warm-up ends");
    assert!((ended - 1.15 / 3.0).abs() < 1e-12, "{ended}");
    assert!(!s.in_warmup());
    assert_eq!(s.lr_at(0), 0.1);
    // The window keeps rolling for the plateau schedule's fallback.
    assert_eq!(s.observe_batch_error(0.4), None);
    let mean = s.recent_train_error().unwrap();
    assert!((mean - 1.45 / 3.0).abs() < 1e-12, "{mean}");
    assert_eq!(s.state().recent_train_errors, [0.1, 0.95, 0.4]);

    // A window whose mean stays at or above 0.8 keeps the warm-up.
    let mut s = Scheduler::new(ScheduleConfig::cifar_resnet110())?.with_train_error_window(2)?;
    for e in [0.9, 0.7, 0.9, 0.7] {
        assert_eq!(s.observe_batch_error(e), None);
    }
    assert!(s.in_warmup());
    assert!(matches!(
        Scheduler::new(ScheduleConfig::cifar())?.with_train_error_window(0),
        Err(TrainError::InvalidConfig(_))
    ));
    Ok(())
}

#[test]
fn a_window_saved_mid_warmup_resumes_as_if_never_stopped() -> TestResult {
    let errors = [0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65];
    let new = || -> Result<Scheduler, TrainError> {
        Scheduler::new(ScheduleConfig::cifar_resnet110())?.with_train_error_window(4)
    };
    let mut full = new()?;
    let uninterrupted: Vec<_> = errors
        .iter()
        .map(|&e| full.observe_batch_error(e))
        .collect();
    assert!(uninterrupted[5].is_some(), "{uninterrupted:?}");

    let mut first = new()?;
    let mut resumed: Vec<_> = errors[..3]
        .iter()
        .map(|&e| first.observe_batch_error(e))
        .collect();
    let json = serde_json::to_string(&first.state())?;
    let mut second = new()?;
    second.load_state(serde_json::from_str(&json)?)?;
    resumed.extend(errors[3..].iter().map(|&e| second.observe_batch_error(e)));
    assert_eq!(resumed, uninterrupted);
    assert_eq!(second.state(), full.state());
    Ok(())
}

#[test]
fn state_must_match_config() -> TestResult {
    let mut step = Scheduler::new(ScheduleConfig::cifar())?;
    let plateau_state = Scheduler::new(ScheduleConfig::imagenet())?.state();
    let err = step.load_state(plateau_state.clone()).unwrap_err();
    assert!(
        matches!(err, TrainError::SchedulerStateMismatch(_)),
        "{err}"
    );
    let unfinished = SchedulerState {
        warmup_done: false,
        plateau: None,
        recent_train_errors: Default::default(),
    };
    assert!(step.load_state(unfinished).is_err());
    let overfull = SchedulerState {
        recent_train_errors: [0.5, 0.5].into(),
        ..step.state()
    };
    assert!(step.load_state(overfull.clone()).is_err(), "window of 1");
    let mut wider = Scheduler::new(ScheduleConfig::cifar())?.with_train_error_window(2)?;
    wider.load_state(overfull)?;

    let mut plat = Scheduler::new(ScheduleConfig::imagenet())?;
    assert!(plat.load_state(step.state()).is_err());
    let bad_lr = SchedulerState {
        warmup_done: true,
        plateau: Some(PlateauState {
            lr: 0.0,
            best: None,
            num_bad: 0,
        }),
        recent_train_errors: Default::default(),
    };
    assert!(plat.load_state(bad_lr).is_err());
    plat.load_state(plateau_state)?;
    Ok(())
}

#[test]
fn configs_parse_from_toml_and_json() -> TestResult {
    let toml_text = r#"
        [schedule]
        type = "step"
        base_lr = 0.1
        milestones = [32000, 48000]
        gamma = 0.1

        [warmup]
        lr = 0.01
        until_train_error_below = 0.8
    "#;
    let config: ScheduleConfig = toml::from_str(toml_text)?;
    assert_eq!(config, ScheduleConfig::cifar_resnet110());
    assert_eq!(
        toml::from_str::<ScheduleConfig>(&toml::to_string(&config)?)?,
        config
    );

    let json = r#"{"schedule": {"type": "plateau", "base_lr": 0.1, "factor": 0.1,
                   "patience": 5, "threshold": 0.001, "min_lr": 0.0001}}"#;
    let config: ScheduleConfig = serde_json::from_str(json)?;
    assert_eq!(config, ScheduleConfig::imagenet());
    assert_eq!(
        serde_json::from_str::<ScheduleConfig>(&serde_json::to_string(&config)?)?,
        config
    );
    assert_eq!(ScheduleConfig::default(), ScheduleConfig::cifar());

    let typo = r#"{"schedule": {"type": "step", "base_lr": 0.1, "milestone": [1], "gamma": 0.1}}"#;
    assert!(serde_json::from_str::<ScheduleConfig>(typo).is_err());
    Ok(())
}

#[test]
fn invalid_configs_are_rejected() {
    let bad = [
        LrSchedule::Step {
            base_lr: 0.1,
            milestones: vec![48_000, 32_000],
            gamma: 0.1,
        },
        LrSchedule::Step {
            base_lr: -0.1,
            milestones: vec![],
            gamma: 0.1,
        },
        LrSchedule::Plateau {
            base_lr: 0.1,
            factor: 1.5,
            patience: 3,
            threshold: 0.0,
            min_lr: 0.0,
        },
        LrSchedule::Plateau {
            base_lr: 0.1,
            factor: 0.1,
            patience: 0,
            threshold: 0.0,
            min_lr: 0.0,
        },
        LrSchedule::Plateau {
            base_lr: 0.1,
            factor: 0.1,
            patience: 3,
            threshold: 0.0,
            min_lr: 0.2,
        },
    ];
    for schedule in bad {
        let config = ScheduleConfig {
            schedule,
            warmup: None,
        };
        assert!(
            matches!(Scheduler::new(config), Err(TrainError::InvalidConfig(_))),
            "accepted an invalid config"
        );
    }
    let config = ScheduleConfig {
        warmup: Some(Warmup {
            lr: 0.0,
            until_train_error_below: 0.8,
        }),
        ..ScheduleConfig::cifar()
    };
    assert!(Scheduler::new(config).is_err());
}

#[test]
fn cosine_falls_from_base_to_min_as_pytorchs_cosine_annealing() -> TestResult {
    let scheduler = Scheduler::new(ScheduleConfig {
        schedule: LrSchedule::Cosine {
            base_lr: 0.1,
            iterations: 100,
            min_lr: 0.001,
        },
        warmup: None,
    })?;
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    assert!(close(scheduler.lr_at(0), 0.1));
    // Halfway, the mean of the two; a quarter in, PyTorch's closed form.
    assert!(close(scheduler.lr_at(50), (0.1 + 0.001) / 2.0));
    let quarter = 0.001 + 0.099 * (1.0 + (std::f64::consts::PI / 4.0).cos()) / 2.0;
    assert!(close(scheduler.lr_at(25), quarter));
    assert!(close(scheduler.lr_at(100), 0.001));
    assert!(
        close(scheduler.lr_at(150), 0.001),
        "stays at the floor past the end"
    );
    let rates: Vec<f64> = (0..=100).map(|i| scheduler.lr_at(i)).collect();
    assert!(rates.windows(2).all(|w| w[1] <= w[0]), "never rises");

    let bad = LrSchedule::Cosine {
        base_lr: 0.1,
        iterations: 0,
        min_lr: 0.0,
    };
    assert!(bad.validate().is_err());
    Ok(())
}
