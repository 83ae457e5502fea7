//! The extension module `analyzer._core`: the capture reader, in batches.
//!
//! One call returns up to `max` TCP segments as the tuples the Python reader yields
//! (`(ts, key, seq, ack, flags, payload)`), so the Python side pays one call per batch
//! rather than a record header unpack, a slice and a struct unpack per packet.

use std::fs::File;
use std::io::{Seek, SeekFrom};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::decode::{decode_frame, known_linktype, Decoded};
use crate::pcap::{Damage, PcapRecords};

#[pyclass(module = "analyzer._core")]
struct PcapSegments {
    records: PcapRecords<File>,
    linktype: u32,
    scale: f64,
    #[pyo3(get)]
    tcp_segments: u64,
    #[pyo3(get)]
    fragments: u64,
}

#[pymethods]
impl PcapSegments {
    /// The records of a classic pcap file from byte `start` on (its header read by the caller).
    #[new]
    #[pyo3(signature = (path, start, big_endian, nano, linktype, snaplen))]
    fn new(path: &str, start: u64, big_endian: bool, nano: bool, linktype: u32, snaplen: u32) -> PyResult<Self> {
        if !known_linktype(linktype) {
            return Err(PyValueError::new_err(format!("link type {linktype} is not the core's")));
        }
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(start))?;
        Ok(PcapSegments {
            records: PcapRecords::new(file, start, big_endian, snaplen),
            linktype,
            scale: if nano { 1e-9 } else { 1e-6 },
            tcp_segments: 0,
            fragments: 0,
        })
    }

    /// Up to `max` segments, in file order; an empty list at the end (or at damage).
    fn read<'py>(&mut self, py: Python<'py>, max: usize) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        let mut n = 0;
        while n < max {
            let Some(record) = self.records.next_record()? else { break };
            match decode_frame(self.linktype, record.data) {
                Decoded::Tcp(s) => {
                    // The same float operations as the Python reader: sec + frac * scale.
                    let ts = record.sec as f64 + record.frac as f64 * self.scale;
                    let klen = s.addrs.len() + 4;
                    let key = PyBytes::new_with(py, klen, |b| {
                        b[..klen - 4].copy_from_slice(s.addrs);
                        b[klen - 4..].copy_from_slice(s.ports);
                        Ok(())
                    })?;
                    let item = PyTuple::new(
                        py,
                        [
                            ts.into_pyobject(py)?.into_any(),
                            key.into_any(),
                            s.seq.into_pyobject(py)?.into_any(),
                            s.ack.into_pyobject(py)?.into_any(),
                            s.flags.into_pyobject(py)?.into_any(),
                            PyBytes::new(py, s.payload).into_any(),
                        ],
                    )?;
                    out.append(item)?;
                    self.tcp_segments += 1;
                    n += 1;
                }
                Decoded::Fragment => self.fragments += 1,
                Decoded::Other => {}
            }
        }
        Ok(out)
    }

    #[getter]
    fn packets(&self) -> u64 {
        self.records.packets
    }

    #[getter]
    fn position(&self) -> u64 {
        self.records.position()
    }

    #[getter]
    fn bad_records(&self) -> u64 {
        self.records.bad_records
    }

    /// `(file offset, record number, caplen)` of the first empty or over-long record, or None.
    #[getter]
    fn first_bad(&self) -> Option<(u64, u64, u32)> {
        self.records.first_bad.map(|b| (b.offset, b.record, b.caplen))
    }

    /// Where reading stopped early: `(kind, offset, record, have, caplen)` or None; kind is
    /// "header" (inside a record header), "record" (inside a record) or "length" (absurd length).
    #[getter]
    fn damage(&self) -> Option<(&'static str, u64, u64, usize, u32)> {
        self.records.damage.as_ref().map(|d| match *d {
            Damage::TruncatedHeader { offset, record, have } => ("header", offset, record, have, 16),
            Damage::TruncatedRecord { offset, record, have, caplen } => ("record", offset, record, have, caplen),
            Damage::BadLength { offset, record, caplen } => ("length", offset, record, 0, caplen),
        })
    }
}

/// One frame of a known link type decoded as the Python `link_offset` + `decode_ip` do:
/// `(key, seq, ack, flags, payload)`, `()` for a TCP fragment, None otherwise. For the tests.
#[pyfunction]
fn decode_frame_py<'py>(py: Python<'py>, linktype: u32, frame: &[u8]) -> PyResult<PyObject> {
    Ok(match decode_frame(linktype, frame) {
        Decoded::Tcp(s) => (PyBytes::new(py, &s.key()), s.seq, s.ack, s.flags, PyBytes::new(py, s.payload))
            .into_pyobject(py)?
            .into_any()
            .unbind(),
        Decoded::Fragment => PyTuple::empty(py).into_any().unbind(),
        Decoded::Other => py.None(),
    })
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("IMPLEMENTATION", "rust")?;
    m.add("VERSION", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<PcapSegments>()?;
    m.add_function(wrap_pyfunction!(decode_frame_py, m)?)?;
    Ok(())
}
