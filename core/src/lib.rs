//! msnp-core: the compiled core of msnp-analyzer.
//!
//! Plain Rust (no Python needed to build or test it): capture records (`pcap`, `pcapng`),
//! link, IP and TCP headers (`decode`), the TCP fast lane's rules (`lane`), the MSNP reader (`reader`, `tables`), the secret parameters and their masks (`redact`). With the `python` feature it is also the extension module
//! `analyzer._core` (`python`), which the Python package uses when it was built and falls
//! back from when it was not. The Python modules stay the reference: the test suite runs
//! both implementations on the same inputs and compares their outputs.
//!
//! No `unsafe` here: every read of capture bytes is a checked slice.
#![forbid(unsafe_code)]

pub mod decode;
pub mod jsonl;
pub mod lane;
pub mod pcap;
pub mod pcapng;
pub mod reader;
pub mod redact;
pub mod tables;

#[cfg(feature = "python")]
mod python;
