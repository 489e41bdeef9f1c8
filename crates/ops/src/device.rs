//! Device selection from a user-facing string (`--device cpu|cuda[:N]|metal[:N]`).

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

use crate::OpsError;

/// A device as the user names it: parsed from `cpu`, `cuda`, `cuda:N`,
/// `metal` or `metal:N`, then opened with [`DeviceSpec::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The host CPU (always available).
    #[default]
    Cpu,
    /// An NVIDIA GPU by ordinal (needs the `cuda` feature of candle).
    Cuda(usize),
    /// An Apple GPU by ordinal (needs the `metal` feature of candle).
    Metal(usize),
}

impl DeviceSpec {
    /// Opens the device; a GPU that is not compiled in or not present is an
    /// error naming the device.
    pub fn open(self) -> Result<Device, OpsError> {
        let opened = match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(n) => Device::new_cuda(n),
            DeviceSpec::Metal(n) => Device::new_metal(n),
        };
        opened.map_err(|source| OpsError::Unavailable {
            spec: self.to_string(),
            source,
        })
    }
}

impl FromStr for DeviceSpec {
    type Err = OpsError;

    fn from_str(s: &str) -> Result<Self, OpsError> {
        let invalid = || OpsError::InvalidDevice {
            spec: s.to_string(),
        };
        let (kind, ordinal) = match s.split_once(':') {
            Some((kind, n)) => (kind, n.parse::<usize>().map_err(|_| invalid())?),
            None => (s, 0),
        };
        match kind {
            "cpu" if !s.contains(':') => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(ordinal)),
            "metal" => Ok(DeviceSpec::Metal(ordinal)),
            _ => Err(invalid()),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceSpec::Metal(n) => write!(f, "metal:{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_and_rejects_the_rest() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        assert_eq!(
            "metal:1".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::Metal(1)
        );
        for bad in ["gpu", "cpu:0", "cuda:x", "", "cuda:"] {
            let err = bad.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
        assert_eq!(DeviceSpec::Cuda(2).to_string(), "cuda:2");
    }

    #[test]
    fn cpu_opens_and_a_missing_gpu_is_a_named_error() {
        assert!(DeviceSpec::Cpu.open().unwrap().is_cpu());
        if let Err(e) = DeviceSpec::Cuda(7).open() {
            assert!(e.to_string().contains("cuda:7"), "{e}");
        }
    }
}
