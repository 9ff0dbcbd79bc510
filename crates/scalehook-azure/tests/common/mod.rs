//! Shared test fixtures: Azurite (real Table Storage emulator) and the ARM test double.
#![allow(dead_code)]

pub mod arm_double;
pub mod azurite;
pub mod azurite_blob;
