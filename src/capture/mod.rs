//! Capture I/O: pcapng writer and pcap/pcapng reader.
pub mod reader;
pub mod reassembly;
pub mod tlsdecrypt;
pub mod writer;
