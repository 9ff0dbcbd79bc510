//! Shared test fixtures: Azurite (the real Storage emulator: Table, Blob) and the ARM test double.
#![allow(dead_code)]

pub mod arm_double;
pub mod azurite;
pub mod fleet;
pub mod swagger;
