//! Capture I/O: pcapng writer and pcap/pcapng reader.
pub mod writer;
