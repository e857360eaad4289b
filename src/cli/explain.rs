//! `rdprobe explain`: what a disconnect, negotiation, NTSTATUS or error-info code means.

use anyhow::Result;

use rdprobe::report::exit;

use super::*;

pub(crate) fn cmd_explain(code: &str, ext: Option<&str>) -> Result<i32> {
    let ex = rdprobe::diagnose::explain_str(code, ext).map_err(|e| usage(e.to_string()))?;
    if ex.is_empty() {
        println!("no known meaning for {code}");
        return Ok(exit::USAGE);
    }
    print!("{}", rdprobe::diagnose::render_explanations(&ex));
    Ok(exit::SUCCESS)
}
