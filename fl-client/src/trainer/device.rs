//! [`DeviceSpec`]: where a trainer runs, as a config file or the command line names it.
//!
//! `"cpu"` (burn's pure-Rust `flex` backend, always there), `"wgpu"` / `"wgpu:N"` (burn's wgpu
//! backend: Vulkan, Metal or DX12; the `wgpu` feature) and `"cuda"` / `"cuda:N"` (burn's CUDA
//! backend; the `cuda` feature). Every spelling parses in every build, so a config file means
//! the same thing everywhere; asking for a backend the build lacks, or an adapter the machine
//! lacks, is a [`DeviceError`] that names what to build or install, never a panic.

use std::fmt;
use std::str::FromStr;

use burn::prelude::Device;

/// Where the model runs.
///
/// In TOML and on the command line it is a string: `"cpu"`, `"wgpu"` (wgpu's preferred adapter:
/// a discrete GPU first), `"wgpu:N"` (the N-th adapter that [`DeviceSpec::adapters`] lists),
/// `"cuda"` (the first CUDA device) or `"cuda:N"`. Parameters cross to the device when a round's
/// global model is set and back when the update is read, once each per round; each batch's
/// examples are uploaded as the batch starts.
///
/// ```
/// use fl_client::DeviceSpec;
///
/// let gpu: DeviceSpec = "wgpu:1".parse()?;
/// assert_eq!(gpu, DeviceSpec::Wgpu { adapter: Some(1) });
/// assert_eq!(gpu.to_string(), "wgpu:1");
/// assert_eq!(DeviceSpec::default(), DeviceSpec::Cpu);
/// assert!("tpu".parse::<DeviceSpec>().is_err());
/// # Ok::<(), fl_client::DeviceError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum DeviceSpec {
    /// burn's `flex` CPU backend (multi-threaded with rayon, vectorised).
    #[default]
    Cpu,
    /// burn's wgpu backend (the `wgpu` feature).
    Wgpu {
        /// Index into [`DeviceSpec::adapters`]; `None` lets wgpu choose (a discrete GPU first,
        /// or `CUBECL_WGPU_DEFAULT_DEVICE`).
        adapter: Option<usize>,
    },
    /// burn's CUDA backend (the `cuda` feature).
    Cuda {
        /// CUDA device ordinal.
        index: usize,
    },
}

/// What to install when wgpu finds no adapter.
#[cfg_attr(not(feature = "wgpu"), allow(dead_code))]
const WGPU_INSTALL: &str = "install a Vulkan driver (Linux: your GPU vendor's, or Mesa's \
     `apt-get install mesa-vulkan-drivers libvulkan1`, whose lavapipe runs on the CPU); macOS \
     uses Metal and Windows DX12 or Vulkan";
/// What to install when CUDA finds no device.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
const CUDA_INSTALL: &str = "install the NVIDIA driver (libcuda) and the CUDA toolkit's NVRTC \
     (libnvrtc), which burn's CUDA backend loads at run time";

/// Why a [`DeviceSpec`] cannot be parsed or cannot give a device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The string is not a device.
    #[error("unknown device {0:?}: expected \"cpu\", \"wgpu\", \"wgpu:N\", \"cuda\" or \"cuda:N\"")]
    Parse(String),
    /// This build of fl-client does not have the backend.
    #[error(
        "device \"{device}\" needs fl-client built with the `{feature}` feature \
         (cargo build -p fl-client --features {feature}); this build has only: {compiled}"
    )]
    NotCompiled {
        /// The device asked for.
        device: DeviceSpec,
        /// The cargo feature that adds its backend.
        feature: &'static str,
        /// The backends this build has, comma separated.
        compiled: String,
    },
    /// The backend is there but the machine has no such adapter.
    #[error("device \"{device}\": {found} adapter(s) found; {install}")]
    NotFound {
        /// The device asked for.
        device: DeviceSpec,
        /// How many adapters the backend found.
        found: usize,
        /// What to install.
        install: &'static str,
    },
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Wgpu { adapter: None } => f.write_str("wgpu"),
            DeviceSpec::Wgpu { adapter: Some(i) } => write!(f, "wgpu:{i}"),
            DeviceSpec::Cuda { index } => write!(f, "cuda:{index}"),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || DeviceError::Parse(s.to_string());
        let (name, index) = match s.split_once(':') {
            Some((name, index)) => {
                // Digits only: no sign, no spaces, no leading `+` that `parse` would take.
                if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                (name, Some(index.parse::<usize>().map_err(|_| bad())?))
            }
            None => (s, None),
        };
        match (name, index) {
            ("cpu", None) => Ok(DeviceSpec::Cpu),
            ("wgpu", adapter) => Ok(DeviceSpec::Wgpu { adapter }),
            ("cuda", index) => Ok(DeviceSpec::Cuda {
                index: index.unwrap_or(0),
            }),
            _ => Err(bad()),
        }
    }
}

impl serde::Serialize for DeviceSpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DeviceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl DeviceSpec {
    /// The backends this build of fl-client can train on, in `DeviceSpec` spelling.
    pub fn compiled() -> Vec<&'static str> {
        let mut backends = vec!["cpu"];
        if cfg!(feature = "wgpu") {
            backends.push("wgpu");
        }
        if cfg!(feature = "cuda") {
            backends.push("cuda");
        }
        backends
    }

    /// The burn device (without autodiff), checked: the backend is compiled in and the machine
    /// has the adapter. Looking adapters up opens the graphics or CUDA driver; the device itself
    /// initialises on first use, and every trainer on one device in a process shares it.
    pub fn device(self) -> Result<Device, DeviceError> {
        match self {
            DeviceSpec::Cpu => Ok(Device::flex()),
            DeviceSpec::Wgpu { adapter } => self.wgpu(adapter),
            DeviceSpec::Cuda { index } => self.cuda(index),
        }
    }

    /// The adapters [`DeviceSpec::Wgpu`]'s index counts, as `(spec, description)`: empty when
    /// the build lacks the `wgpu` feature or the machine has no graphics driver.
    pub fn adapters() -> Vec<(DeviceSpec, String)> {
        #[cfg(feature = "wgpu")]
        {
            wgpu_adapters()
                .into_iter()
                .enumerate()
                .map(|(i, d)| {
                    let name = d
                        .identity()
                        .map(|id| id.name)
                        .unwrap_or_else(|| format!("{d:?}"));
                    (DeviceSpec::Wgpu { adapter: Some(i) }, name)
                })
                .collect()
        }
        #[cfg(not(feature = "wgpu"))]
        Vec::new()
    }

    #[cfg(not(all(feature = "wgpu", feature = "cuda")))]
    fn not_compiled(self, feature: &'static str) -> DeviceError {
        DeviceError::NotCompiled {
            device: self,
            feature,
            compiled: Self::compiled().join(", "),
        }
    }

    #[cfg(feature = "wgpu")]
    fn wgpu(self, adapter: Option<usize>) -> Result<Device, DeviceError> {
        use burn::tensor::DeviceKind;
        let adapters = wgpu_adapters();
        let not_found = || DeviceError::NotFound {
            device: self,
            found: adapters.len(),
            install: WGPU_INSTALL,
        };
        match adapter {
            None if adapters.is_empty() => Err(not_found()),
            None => Ok(Device::wgpu(DeviceKind::DefaultDevice)),
            Some(i) => adapters.get(i).cloned().ok_or_else(not_found),
        }
    }

    #[cfg(not(feature = "wgpu"))]
    fn wgpu(self, _adapter: Option<usize>) -> Result<Device, DeviceError> {
        Err(self.not_compiled("wgpu"))
    }

    #[cfg(feature = "cuda")]
    fn cuda(self, index: usize) -> Result<Device, DeviceError> {
        let found = Device::enumerate(burn::tensor::DeviceType::Cuda)
            .into_vec()
            .len();
        if index < found {
            Ok(Device::cuda(index))
        } else {
            Err(DeviceError::NotFound {
                device: self,
                found,
                install: CUDA_INSTALL,
            })
        }
    }

    #[cfg(not(feature = "cuda"))]
    fn cuda(self, _index: usize) -> Result<Device, DeviceError> {
        Err(self.not_compiled("cuda"))
    }
}

/// The wgpu adapters on the graphics API wgpu settles on, in its order.
#[cfg(feature = "wgpu")]
fn wgpu_adapters() -> Vec<Device> {
    Device::enumerate(burn::tensor::DeviceType::Wgpu).into_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_round_trips() {
        for (text, spec) in [
            ("cpu", DeviceSpec::Cpu),
            ("wgpu", DeviceSpec::Wgpu { adapter: None }),
            ("wgpu:0", DeviceSpec::Wgpu { adapter: Some(0) }),
            ("wgpu:12", DeviceSpec::Wgpu { adapter: Some(12) }),
            ("cuda:3", DeviceSpec::Cuda { index: 3 }),
        ] {
            assert_eq!(text.parse::<DeviceSpec>().unwrap(), spec, "{text}");
            assert_eq!(spec.to_string(), text);
            let json = serde_json::to_string(&spec).unwrap();
            assert_eq!(serde_json::from_str::<DeviceSpec>(&json).unwrap(), spec);
        }
        // `cuda` alone is the first device, written back in full.
        assert_eq!(
            "cuda".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::Cuda { index: 0 }
        );
    }

    #[test]
    fn malformed_devices_are_refused_by_name() {
        for bad in [
            "",
            "CPU",
            "gpu",
            "cpu:0",
            "wgpu:",
            "wgpu:-1",
            "wgpu:+1",
            "wgpu: 1",
            "cuda:x",
            "cuda:1:2",
            "wgpu:99999999999999999999999",
            " cpu",
        ] {
            let err = bad.parse::<DeviceSpec>().unwrap_err();
            assert_eq!(err, DeviceError::Parse(bad.to_string()));
            assert!(err.to_string().contains("\"wgpu:N\""), "{err}");
        }
        let err = toml::from_str::<toml::Table>("device = 3")
            .unwrap()
            .get("device")
            .cloned()
            .unwrap()
            .try_into::<DeviceSpec>()
            .unwrap_err();
        assert!(err.to_string().contains("string"), "{err}");
    }

    #[test]
    fn the_cpu_is_always_there() {
        assert!(DeviceSpec::Cpu.device().is_ok());
        assert_eq!(DeviceSpec::compiled()[0], "cpu");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_backend_not_compiled_in_names_its_feature() {
        let err = DeviceSpec::Cuda { index: 0 }.device().unwrap_err();
        assert!(matches!(
            err,
            DeviceError::NotCompiled {
                feature: "cuda",
                ..
            }
        ));
        assert!(err.to_string().contains("--features cuda"), "{err}");
    }

    #[cfg(feature = "wgpu")]
    #[test]
    fn an_adapter_past_the_last_is_not_found() {
        let found = DeviceSpec::adapters().len();
        let spec = DeviceSpec::Wgpu {
            adapter: Some(found),
        };
        match spec.device().unwrap_err() {
            DeviceError::NotFound { found: f, .. } => assert_eq!(f, found),
            other => panic!("expected NotFound, got {other}"),
        }
    }
}
