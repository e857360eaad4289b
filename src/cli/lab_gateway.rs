//! `rdprobe lab --gateway-listen ADDR`: the lab's fake RD Gateway in front of the lab server (or of
//! `--target`).

use std::net::SocketAddr;

use anyhow::{Context as _, Result};
use rdprobe::lab::gateway::{spawn_gateway, GatewayConfig};
use rdprobe::lab::LabLimits;
use rdprobe::report::exit;
use rdprobe::scenario::Scenario;

pub async fn run(
    gw: SocketAddr,
    listen: Option<SocketAddr>,
    target: Option<&str>,
    allow_remote: bool,
    sc: Scenario,
    limits: LabLimits,
) -> Result<i32> {
    let mut lab = None;
    let target = match target {
        Some(t) => {
            let addr = tokio::net::lookup_host(t)
                .await
                .with_context(|| format!("resolving --target {t}"))?
                .next()
                .with_context(|| format!("--target {t} resolves to no address"))?;
            rdprobe::lab::check_listen(addr, allow_remote, false).map_err(|_| {
                super::usage(format!(
                    "--target {addr} is not a loopback address: pass --allow-remote to relay there"
                ))
            })?;
            addr
        }
        None => {
            let listen = listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
            rdprobe::lab::check_listen(listen, allow_remote, false)
                .map_err(|e| super::usage(e.to_string()))?;
            let h = rdprobe::lab::spawn_lab_with(listen, sc.clone(), limits)
                .with_context(|| format!("starting the lab on {listen}"))?;
            let a = h.addr;
            lab = Some(h);
            a
        }
    };
    let handle = spawn_gateway(
        gw,
        GatewayConfig {
            scenario: sc.clone(),
            target,
            limits,
        },
    )
    .with_context(|| format!("starting the lab gateway on {gw}"))?;
    eprintln!(
        "lab gateway listening on {} with scenario `{}`, relaying channels to {target}{}\n(stop with Ctrl-C)",
        handle.addr,
        sc.name,
        if lab.is_some() { " (the lab server)" } else { "" }
    );
    super::interrupted().await;
    eprintln!(
        "served {} gateway connection(s)",
        handle.connections_served()
    );
    drop(handle);
    drop(lab);
    Ok(exit::SUCCESS)
}
