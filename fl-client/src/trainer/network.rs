//! The burn modules behind [`ModelSpec`](super::ModelSpec).

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Initializer, Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::prelude::*;

/// Burn initialisers are never run: [`super::params::SeededInit`] replaces every parameter before
/// its lazy initialiser would fire. Zeros makes that explicit and costs nothing if it ever did.
const UNUSED_INIT: Initializer = Initializer::Zeros;

/// One of the models a [`ModelSpec`](super::ModelSpec) names.
///
/// burn visits an enum variant as a module named after the variant; parameter names skip that
/// level (see [`super::params`]), so an MLP's tensors are `hidden.weight`, not
/// `Mlp.hidden.weight`.
#[derive(Module, Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per trainer; burn has no Module impl for Box"
)]
pub(crate) enum Network {
    /// Multi-layer perceptron.
    Mlp(Mlp),
    /// Small convolutional network.
    Cnn(Cnn),
}

impl Network {
    /// Logits `[batch, classes]` for a batch whose rows are flat examples `[batch, features]`.
    pub(crate) fn forward(&self, input: Tensor<2>) -> Tensor<2> {
        match self {
            Network::Mlp(m) => m.forward(input),
            Network::Cnn(m) => m.forward(input),
        }
    }
}

/// `input -> hidden (ReLU) -> classes`.
#[derive(Module, Debug)]
pub(crate) struct Mlp {
    hidden: Linear,
    activation: Relu,
    output: Linear,
}

impl Mlp {
    pub(crate) fn new(inputs: usize, hidden: usize, classes: usize, device: &Device) -> Self {
        let linear = |i, o| {
            LinearConfig::new(i, o)
                .with_initializer(UNUSED_INIT)
                .init(device)
        };
        Self {
            hidden: linear(inputs, hidden),
            activation: Relu::new(),
            output: linear(hidden, classes),
        }
    }

    fn forward(&self, input: Tensor<2>) -> Tensor<2> {
        let x = self.activation.forward(self.hidden.forward(input));
        self.output.forward(x)
    }
}

/// `[c, h, w]` images -> conv3x3 (`channels`) -> ReLU -> max-pool 2 -> conv3x3 (`2 * channels`)
/// -> ReLU -> max-pool 2 -> linear to classes.
#[derive(Module, Debug)]
pub(crate) struct Cnn {
    conv1: Conv2d,
    conv2: Conv2d,
    pool: MaxPool2d,
    activation: Relu,
    output: Linear,
    /// `[channels, height, width]` of one input example.
    #[module(skip)]
    image: [usize; 3],
}

impl Cnn {
    /// Smallest image side the two 2x2 poolings leave at least one pixel of.
    pub(crate) const MIN_SIDE: usize = 4;

    pub(crate) fn new(image: [usize; 3], channels: usize, classes: usize, device: &Device) -> Self {
        let conv = |i, o| {
            Conv2dConfig::new([i, o], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_initializer(UNUSED_INIT)
                .init(device)
        };
        let flat = 2 * channels * (image[1] / 4) * (image[2] / 4);
        Self {
            conv1: conv(image[0], channels),
            conv2: conv(channels, 2 * channels),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            activation: Relu::new(),
            output: LinearConfig::new(flat, classes)
                .with_initializer(UNUSED_INIT)
                .init(device),
            image,
        }
    }

    fn forward(&self, input: Tensor<2>) -> Tensor<2> {
        let [batch, _] = input.dims();
        let [c, h, w] = self.image;
        let x = input.reshape([batch, c, h, w]);
        let x = self
            .pool
            .forward(self.activation.forward(self.conv1.forward(x)));
        let x = self
            .pool
            .forward(self.activation.forward(self.conv2.forward(x)));
        self.output.forward(x.flatten(1, 3))
    }
}
