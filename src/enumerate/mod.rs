//! `rdprobe enum`: one short connection per question (work in progress).
