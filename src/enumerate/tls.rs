//! TLS questions: which versions, which cipher suites in which order, the certificate; and the
//! CredSSP question riding on one of the handshakes.
//!
//! * Versions: a ClientHello offering TLS 1.0 up to 1.3, one up to 1.2 and one up to 1.1 (run
//!   together): the server answers each with the highest version it speaks within the range, so
//!   the three answer all four versions unless the server picks TLS 1.1, when a TLS 1.0-only
//!   hello follows ([`version_answers`]). Each accepted answer is also the first elimination step
//!   of its version (everything offered, the server's pick is its first choice).
//! * Cipher suites by elimination, one version at a time: offer everything not yet picked until
//!   the server refuses: N accepted suites cost N + 1 handshakes, sequential, on connections the
//!   pool opens ahead. The second step offers everything with the first pick moved last: a server
//!   with its own preference picks it again (one extra handshake, then the list is its full
//!   preference order); a server that follows the client's order picks the next one
//!   ([`Preference`]). Such a server is offered a likely suite last ([`likely_last`]): when it
//!   picks that one, everything else was offered before it and refused, and the list ends
//!   without the refusal handshake (N suites, N handshakes).
//!
//! OpenSSL speaks every version (min/max set per hello, `@SECLEVEL=0`), so TLS 1.0 and 1.1 are
//! asked even though rustls does not speak them.

use std::time::{Duration, Instant};

use openssl::ssl::{SslContext, SslMethod, SslOptions, SslVerifyMode, SslVersion};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

use super::pool::Pool;
use super::{close, CredsspEnum, TlsEnum, TlsVersionResult};
use crate::decode::tls::version_name;
use futures_util::future::join_all;

/// TLS version numbers and OpenSSL versions, oldest first (indexes are used below); their names
/// are decode's ([`version_name`]).
pub const TLS_VERSIONS: [(u16, SslVersion); 4] = crate::probe::tls::OPENSSL_VERSIONS;

/// The name of [`TLS_VERSIONS`]`[i]` ("TLSv1.2").
fn version_at(i: usize) -> String {
    version_name(TLS_VERSIONS[i].0)
}

/// Index of TLS 1.3 in [`TLS_VERSIONS`].
const TLS13: usize = 3;

/// The TLS 1.3 suites OpenSSL implements (RFC 8446 B.4), in the order offered.
pub const TLS13_SUITES: [&str; 5] = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_AES_128_CCM_SHA256",
    "TLS_AES_128_CCM_8_SHA256",
];

/// Every suite up to TLS 1.2, in OpenSSL's order.
const ALL_12: &str = "ALL:COMPLEMENTOFALL";

/// Key exchange groups (OpenSSL cipher strings) eliminated in parallel, after the order check,
/// on a server that follows the client's order and accepts connections cheaply: each group costs
/// one more refusal, and the longest sequence of handshakes gets about three times shorter.
const KX_GROUPS: [&str; 3] = ["kECDHE", "kDHE", "ALL:COMPLEMENTOFALL:!kECDHE:!kDHE"];

/// Rank of a suite's key exchange in the listing of a server that follows the client's order:
/// ECDHE, DHE, then the others; also its group's index in [`KX_GROUPS`]. Takes IANA names
/// ("TLS_ECDHE_RSA_…") and OpenSSL names ("ECDHE-RSA-…").
pub fn kx_rank(name: &str) -> usize {
    let kx = name.strip_prefix("TLS_").unwrap_or(name);
    let is = |k: &str| {
        kx.strip_prefix(k)
            .is_some_and(|r| r.starts_with(['_', '-']))
    };
    if is("ECDHE") {
        0
    } else if is("DHE") {
        1
    } else {
        2
    }
}

/// A suite the server very probably speaks besides `first` (its pick when offered everything),
/// offered last in the elimination steps: on a server that follows the client's order, picking
/// it ends the list without a refusal handshake, one connection less per version. A wrong
/// guess costs nothing (the refusal comes as before). Chosen by version and by the
/// authentication of `first` (ECDSA or RSA certificate); OpenSSL names.
pub fn likely_last(v: usize, first: &str) -> Option<&'static str> {
    const SUITES_13: &[&str] = &["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384"];
    const ECDSA_12: &[&str] = &[
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
    ];
    const RSA_12: &[&str] = &["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384"];
    const ECDSA_10: &[&str] = &["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA"];
    const RSA_10: &[&str] = &["ECDHE-RSA-AES128-SHA", "AES128-SHA"];
    let ecdsa = first.contains("ECDSA");
    let list = match v {
        TLS13 => SUITES_13,
        2 if ecdsa => ECDSA_12,
        2 => RSA_12,
        _ if ecdsa => ECDSA_10,
        _ => RSA_10,
    };
    list.iter().copied().find(|s| *s != first)
}

/// Whose order decides which cipher suite the server picks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Preference {
    /// The server's own: it picked its first choice again when that was offered last, so the
    /// list is its full preference order.
    Server,
    /// The client's: the server picked the next suite when its first pick was offered last; the
    /// list is in the order offered (OpenSSL's).
    Client,
    /// Fewer than two suites accepted, or the enumeration stopped before the order could be told.
    Unknown,
}

/// The preference from the second elimination step: the pick when the first pick was offered
/// last, and how many suites were accepted in all.
pub fn preference(first: &str, second_step: Option<&str>, accepted: usize) -> Preference {
    match second_step {
        _ if accepted < 2 => Preference::Unknown,
        Some(p) if p == first => Preference::Server,
        Some(_) => Preference::Client,
        None => Preference::Unknown,
    }
}

/// What a hello offering TLS 1.0 up to some version got: the version chosen (index into
/// [`TLS_VERSIONS`]) or why it failed.
pub type RangeAnswer = Result<usize, String>;

/// One version's answer: accepted (with the index of the range hello that chose it) or why not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VersionAnswer {
    /// Accepted; the range hello (by its top version) whose pick starts the elimination.
    Accepted {
        by: usize,
    },
    Refused(String),
    /// Not answered by the range hellos: ask this version alone.
    Ask,
}

/// The four versions' answers from the range hellos, `ranges[m]` being the hello offering TLS 1.0
/// up to version `m` (None when not sent). A server picks the highest version it speaks within
/// the range (RFC 8446 4.2.1, RFC 5246 E.1), so the hello up to `m` answers version `m`; version
/// 1.0 is answered by the hello up to 1.1 unless that chose 1.1.
pub fn version_answers(ranges: &[Option<RangeAnswer>; 4]) -> [VersionAnswer; 4] {
    std::array::from_fn(|v| {
        let (by, r) = match (&ranges[v], ranges.get(v + 1)) {
            (Some(r), _) => (v, r),
            (None, Some(Some(r))) => (v + 1, r),
            _ => return VersionAnswer::Ask,
        };
        match r {
            Ok(chosen) if *chosen == v => VersionAnswer::Accepted { by },
            Ok(chosen) if *chosen < v => VersionAnswer::Refused(format!(
                "the server chose {} when offered up to {}",
                version_at(*chosen),
                version_at(by)
            )),
            // Only the hello up to v + 1 can choose above v: it does not tell about v.
            Ok(_) => VersionAnswer::Ask,
            Err(e) => VersionAnswer::Refused(e.clone()),
        }
    })
}

/// What one ClientHello offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    pub min: usize,
    pub max: usize,
    /// OpenSSL cipher string for TLS 1.0-1.2 (without the security level).
    pub ciphers: String,
    /// TLS 1.3 suites, colon-separated.
    pub suites13: String,
}

impl Offer {
    /// Everything, TLS 1.0 up to `max`.
    pub fn range(max: usize) -> Self {
        Offer {
            min: 0,
            max,
            ciphers: ALL_12.into(),
            suites13: TLS13_SUITES.join(":"),
        }
    }

    /// Elimination step: version `v` alone, every suite but `found` (OpenSSL names), ChaCha20
    /// last ([`Offer::chacha_last`]).
    pub fn without(v: usize, found: &[String]) -> Self {
        Self::without_in(v, ALL_12, found).chacha_last()
    }

    /// Elimination step within a group: version `v` alone, the suites of `group` (an OpenSSL
    /// cipher string; TLS 1.2 and older) but `found`.
    pub fn without_in(v: usize, group: &str, found: &[String]) -> Self {
        let mut o = Offer {
            min: v,
            max: v,
            ..Offer::range(v)
        };
        o.ciphers = group.to_owned();
        if v == TLS13 {
            o.suites13 = TLS13_SUITES
                .iter()
                .filter(|s| !found.iter().any(|f| f == *s))
                .copied()
                .collect::<Vec<_>>()
                .join(":");
        } else {
            for f in found {
                o.ciphers.push_str(":!");
                o.ciphers.push_str(f);
            }
        }
        o
    }

    /// Order check: version `v` alone, everything (ChaCha20 late), `guess` (a suite the server
    /// probably speaks, see [`likely_last`]) second to last and `first` last.
    pub fn order_check(v: usize, first: &str, guess: Option<&str>) -> Self {
        let o = Self::range(v).alone().chacha_last();
        match guess {
            Some(g) if g != first => o.moved_last(g).moved_last(first),
            _ => o.moved_last(first),
        }
    }

    /// Elimination step that ends a client-order server's list early: every suite but `found`,
    /// with `guess` last. When such a server picks `guess`, every other suite not yet found was
    /// offered before it and refused, so no refusal handshake is needed.
    pub fn without_last(v: usize, found: &[String], guess: Option<&str>) -> Self {
        let o = Self::without(v, found);
        match guess {
            Some(g) if !found.iter().any(|f| f == g) => o.moved_last(g),
            _ => o,
        }
    }

    /// ChaCha20 suites after the others. OpenSSL's SSL_OP_PRIORITIZE_CHACHA makes a server that
    /// picks by its own order pick ChaCha20 whenever it is the client's first suite; an offer
    /// that led with it would make such a server read as following the client's order.
    fn chacha_last(self) -> Self {
        self.sent_last(|s| s.contains("CHACHA20"), "CHACHA20")
    }

    /// Version `v` alone (min = max = `v`).
    fn alone(self) -> Self {
        let v = self.max;
        Offer { min: v, ..self }
    }

    /// `suite` moved to the end of what is offered (OpenSSL's `+` operator up to TLS 1.2; the
    /// explicit list for TLS 1.3). A suite not offered stays out.
    fn moved_last(self, suite: &str) -> Self {
        self.sent_last(|s| s == suite, suite)
    }

    /// The suites `is_moved` picks moved to the end, keeping their order and the others': for
    /// TLS 1.3 in the explicit list, up to TLS 1.2 with OpenSSL's `+` operator on `spec` (a
    /// cipher string matching the same suites).
    fn sent_last(mut self, is_moved: impl Fn(&str) -> bool, spec: &str) -> Self {
        if self.tls13_only() {
            let mut s: Vec<&str> = self.suites13.split(':').filter(|s| !s.is_empty()).collect();
            s.sort_by_key(|x| is_moved(x));
            self.suites13 = s.join(":");
        } else {
            self.ciphers.push_str(":+");
            self.ciphers.push_str(spec);
        }
        self
    }

    /// Only TLS 1.3 is offered (its suites are the explicit `suites13` list).
    fn tls13_only(&self) -> bool {
        self.max == TLS13 && self.min == TLS13
    }

    /// Nothing left to offer (TLS 1.3 with every suite found).
    fn is_empty(&self) -> bool {
        self.tls13_only() && self.suites13.is_empty()
    }
}

/// What one handshake gave.
pub(super) struct Handshake {
    /// Index into [`TLS_VERSIONS`] of the version negotiated.
    pub version: Option<usize>,
    /// OpenSSL name and IANA name of the suite chosen.
    pub suite: Option<(String, String)>,
    pub chain: Vec<Vec<u8>>,
    pub error: Option<String>,
    /// The TLS stream, when asked to keep it.
    pub stream: Option<SslStream<TcpStream>>,
}

impl Handshake {
    fn failed(e: impl Into<String>) -> Self {
        Handshake {
            version: None,
            suite: None,
            chain: Vec::new(),
            error: Some(e.into()),
            stream: None,
        }
    }

    fn answer(&self) -> RangeAnswer {
        match (self.version, &self.error) {
            (Some(v), _) => Ok(v),
            (None, Some(e)) => Err(e.clone()),
            (None, None) => Err("no version negotiated".into()),
        }
    }
}

fn ssl_for(o: &Offer) -> Result<openssl::ssl::Ssl, openssl::error::ErrorStack> {
    let mut b = SslContext::builder(SslMethod::tls_client())?;
    b.set_verify(SslVerifyMode::NONE);
    b.set_min_proto_version(Some(TLS_VERSIONS[o.min].1))?;
    b.set_max_proto_version(Some(TLS_VERSIONS[o.max].1))?;
    if o.max == TLS13 {
        b.set_ciphersuites(&o.suites13)?;
    }
    if o.min < TLS13 {
        b.set_cipher_list(&format!("{}:@SECLEVEL=0", o.ciphers))?;
    } else {
        b.set_cipher_list("ALL:@SECLEVEL=0")?;
    }
    b.set_options(SslOptions::NO_TICKET);
    openssl::ssl::Ssl::new(&b.build())
}

/// A short text of an OpenSSL handshake error: the alert when there was one.
fn tls_error_text(e: &openssl::ssl::Error) -> String {
    if let Some(stack) = e.ssl_error() {
        if let Some(r) = stack.errors().first().and_then(|f| f.reason()) {
            return r.to_owned();
        }
    }
    let s = e.to_string();
    if e.io_error().is_some() || s.contains("unexpected EOF") {
        return CLOSED.into();
    }
    s
}

const CLOSED: &str = "the server closed the connection";

fn version_index(v: Option<SslVersion>) -> Option<usize> {
    let v = v?;
    TLS_VERSIONS.iter().position(|(_, x)| *x == v)
}

/// OpenSSL's order of what it offers for version `v` alone (`ALL:COMPLEMENTOFALL` at
/// `@SECLEVEL=0`): the cipher suites of the ClientHello it writes, made in memory (nothing is
/// sent), named as the handshakes name them (IANA, else OpenSSL's name). Empty if OpenSSL cannot
/// build one.
pub fn openssl_order(v: usize) -> Vec<String> {
    offered_names(&Offer::without_in(v, ALL_12, &[]))
}

/// The cipher suites a ClientHello for `offer` carries, in order, named as the handshakes name
/// them (see [`openssl_order`]).
fn offered_names(offer: &Offer) -> Vec<String> {
    let (Ok(ssl), Ok(namer)) = (ssl_for(offer), ssl_for(offer)) else {
        return Vec::new();
    };
    let wire: Vec<u8> = client_hello_suites(&hello_bytes(ssl))
        .iter()
        .flat_map(|id| id.to_be_bytes())
        .collect();
    match namer.bytes_to_cipher_list(&wire, false) {
        Ok(lists) => lists
            .suites
            .iter()
            .map(|c| c.standard_name().unwrap_or(c.name()).to_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The ClientHello record(s) OpenSSL writes for `ssl`, made in memory: nothing is sent.
fn hello_bytes(ssl: openssl::ssl::Ssl) -> Vec<u8> {
    /// Takes what OpenSSL writes; has nothing to read, so the handshake stops after the hello.
    struct Capture(Vec<u8>);
    impl std::io::Read for Capture {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::WouldBlock.into())
        }
    }
    impl std::io::Write for Capture {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    match ssl.connect(Capture(Vec::new())) {
        Err(openssl::ssl::HandshakeError::WouldBlock(mid)) => mid.get_ref().0.clone(),
        _ => Vec::new(),
    }
}

/// The cipher suites of the first ClientHello in a TLS byte stream, in order.
fn client_hello_suites(stream: &[u8]) -> Vec<u16> {
    use crate::wire::tls as dt;
    let (records, _) = dt::split_records(stream);
    let fragments: Vec<u8> = records
        .iter()
        .filter(|r| r.content_type == dt::CT_HANDSHAKE)
        .flat_map(|r| r.fragment(stream).iter().copied())
        .collect();
    dt::parse_handshakes(&fragments)
        .0
        .into_iter()
        .find_map(|h| match h {
            dt::Handshake::ClientHello { cipher_suites, .. } => Some(cipher_suites),
            _ => None,
        })
        .unwrap_or_default()
}

/// One handshake on a ready connection.
async fn handshake_on(s: TcpStream, o: &Offer, timeout: Duration, keep: bool) -> Handshake {
    let t0 = Instant::now();
    let ssl = match ssl_for(o) {
        Ok(s) => s,
        Err(e) => {
            close(s).await;
            return Handshake::failed(format!("openssl: {e}"));
        }
    };
    let mut tls = match SslStream::new(ssl, s) {
        Ok(t) => t,
        Err(e) => return Handshake::failed(format!("openssl: {e}")),
    };
    let mut h = Handshake::failed("");
    match tokio::time::timeout(timeout, std::pin::Pin::new(&mut tls).connect()).await {
        Err(_) => {
            h.error = Some(format!(
                "handshake timed out after {} ms",
                timeout.as_millis()
            ))
        }
        Ok(Err(e)) => h.error = Some(tls_error_text(&e)),
        Ok(Ok(())) => {
            h.error = None;
            let ssl = tls.ssl();
            h.version = version_index(ssl.version2());
            h.suite = ssl.current_cipher().map(|c| {
                (
                    c.name().to_owned(),
                    c.standard_name().unwrap_or(c.name()).to_owned(),
                )
            });
            h.chain = ssl
                .peer_cert_chain()
                .map(|c| c.iter().filter_map(|x| x.to_der().ok()).collect())
                .unwrap_or_default();
            if h.chain.is_empty() {
                if let Some(c) = ssl.peer_certificate().and_then(|c| c.to_der().ok()) {
                    h.chain.push(c);
                }
            }
        }
    }
    tracing::debug!(
        ms = t0.elapsed().as_millis() as u64,
        min = %version_at(o.min),
        max = %version_at(o.max),
        ciphers = %o.ciphers,
        suites13 = %o.suites13,
        suite = h.suite.as_ref().map(|s| s.1.as_str()).unwrap_or("-"),
        error = h.error.as_deref().unwrap_or("-"),
        "enum: tls handshake"
    );
    if keep && h.error.is_none() {
        h.stream = Some(tls);
    } else if h.error.is_none() {
        use tokio::io::AsyncWriteExt;
        let _ = tokio::time::timeout(Duration::from_millis(200), tls.shutdown()).await;
    }
    h
}

/// One handshake on a connection from the pool. A connection that waited in the pool and was
/// closed by the server before it answered is replaced by a fresh one once.
pub(super) async fn handshake(pool: &Pool, o: &Offer, keep: bool) -> Handshake {
    let timeout = pool.ctx().timeout;
    let (s, waited) = match pool.get().await {
        Ok(s) => s,
        Err(e) => return Handshake::failed(e),
    };
    let h = handshake_on(s, o, timeout, keep).await;
    if waited && h.error.as_deref() == Some(CLOSED) {
        return match pool.get_fresh().await {
            Ok(s) => handshake_on(s, o, timeout, keep).await,
            Err(e) => Handshake::failed(e),
        };
    }
    h
}

/// The elimination of one version's suites, starting from the pick of the hello that offered
/// everything.
/// One version's elimination: suites (OpenSSL and IANA names), handshakes, limit reached, whose
/// order decides, why it stopped early.
type Elimination = (
    Vec<(String, String)>,
    usize,
    bool,
    Preference,
    Option<String>,
);

async fn eliminate(
    pool: &Pool,
    v: usize,
    first: (String, String),
    limit: usize,
    prefetch: usize,
) -> Elimination {
    let (mut found, attempts, truncated, pref, error) =
        eliminate_steps(pool, v, first, limit, prefetch).await;
    if pref == Preference::Client {
        // The order offered decided, so list by key exchange, each group in OpenSSL's order
        // (TLS 1.3: RFC 8446's), not in the order found (the guess was offered last).
        let order: Vec<String> = if v == TLS13 {
            TLS13_SUITES.iter().map(|s| (*s).to_owned()).collect()
        } else {
            openssl_order(v)
        };
        let pos = |iana: &str| order.iter().position(|o| o == iana).unwrap_or(usize::MAX);
        found.sort_by_key(|f| (kx_rank(&f.1), pos(&f.1)));
    }
    (found, attempts, truncated, pref, error)
}

/// The rest of a group's elimination after `found` on a server that follows the client's order:
/// (suites found, handshakes, limit reached). `guess` (a suite of this group) is offered last,
/// and picking it ends the group without a refusal (see [`Offer::without_last`]).
async fn eliminate_group(
    pool: &Pool,
    v: usize,
    group: &str,
    found: &[String],
    guess: Option<&str>,
    limit: usize,
    prefetch: usize,
) -> (Vec<(String, String)>, usize, bool) {
    let mut names = found.to_vec();
    let mut more = Vec::new();
    let mut attempts = 0;
    loop {
        if names.len() >= limit {
            return (more, attempts, true);
        }
        if guess.is_some_and(|g| names.iter().any(|n| n == g)) {
            return (more, attempts, false);
        }
        let mut offer = Offer::without_in(v, group, &names);
        if let Some(g) = guess {
            offer = offer.moved_last(g);
        }
        pool.prefetch(prefetch);
        let h = handshake(pool, &offer, false).await;
        attempts += 1;
        match h.suite {
            // The server chose a suite that was not offered: stop rather than loop.
            Some((ossl, _)) if names.contains(&ossl) => return (more, attempts, false),
            Some((ossl, iana)) => {
                names.push(ossl.clone());
                more.push((ossl, iana));
            }
            None => return (more, attempts, false),
        }
    }
}

/// The first pick, the order check, then either one sequence of steps or, on a server that
/// follows the client's order and accepts connections cheaply, one per key exchange group.
async fn eliminate_steps(
    pool: &Pool,
    v: usize,
    first: (String, String),
    limit: usize,
    prefetch: usize,
) -> Elimination {
    let mut found = vec![first.clone()];
    let mut attempts = 1;
    let mut second: Option<String> = None;
    let mut error = None;
    let mut truncated = false;
    let guess = likely_last(v, &first.0);
    // Step 2: everything, the guess second to last, the first pick last.
    pool.prefetch(prefetch);
    let h = handshake(pool, &Offer::order_check(v, &first.0, guess), false).await;
    attempts += 1;
    match h.suite {
        Some((ossl, iana)) => {
            second = Some(ossl.clone());
            if ossl != first.0 {
                found.push((ossl, iana));
            }
        }
        None => error = h.error,
    }
    let client_order = second.as_deref().is_some_and(|s| s != first.0);
    // INVARIANT: on a client-order server every offer lists `guess` last among the suites not
    // yet found, so the server picks it only when it refused all the others: the list is
    // complete without a refusal handshake.
    let guessed = |found: &[(String, String)]| {
        client_order && guess.is_some_and(|g| found.iter().any(|f| f.0 == g))
    };
    if error.is_none()
        && client_order
        && !guessed(&found)
        && v < TLS13
        && pool.ctx().connections_are_cheap()
    {
        let names: Vec<String> = found.iter().map(|f| f.0.clone()).collect();
        let groups = join_all(KX_GROUPS.iter().enumerate().map(|(i, g)| {
            let guess = guess.filter(|g| kx_rank(g) == i);
            eliminate_group(pool, v, g, &names, guess, limit, prefetch)
        }))
        .await;
        for (more, n, t) in groups {
            attempts += n;
            truncated |= t;
            for m in more {
                if !found.iter().any(|f| f.0 == m.0) {
                    found.push(m);
                }
            }
        }
        if found.len() > limit {
            found.truncate(limit);
            truncated = true;
        }
        let pref = preference(&first.0, second.as_deref(), found.len());
        return (found, attempts, truncated, pref, error);
    }
    while error.is_none() && second.is_some() && !guessed(&found) {
        if found.len() >= limit {
            truncated = true;
            break;
        }
        let names: Vec<String> = found.iter().map(|f| f.0.clone()).collect();
        let offer = Offer::without_last(v, &names, guess.filter(|_| client_order));
        if offer.is_empty() {
            break;
        }
        pool.prefetch(prefetch);
        let h = handshake(pool, &offer, false).await;
        attempts += 1;
        match h.suite {
            // The server chose a suite that was not offered: stop rather than loop.
            Some((ossl, _)) if names.contains(&ossl) => break,
            Some(s) => found.push(s),
            None => break,
        }
    }
    let pref = preference(&first.0, second.as_deref(), found.len());
    (found, attempts, truncated, pref, error)
}

/// What the TLS questions found, and the CredSSP answer when it rode on a handshake.
pub(super) struct TlsOutcome {
    pub tls: TlsEnum,
    pub credssp: Option<CredsspEnum>,
}

/// All TLS questions over `pool`. With `credssp_via` set (the pool's protocol is HYBRID or
/// HYBRID_EX), the CredSSP question rides on the first successful handshake.
pub(super) async fn enumerate_tls(
    pool: &Pool,
    host: &str,
    limit: usize,
    skip_ciphers: bool,
    prefetch: usize,
    credssp_via: Option<&str>,
) -> TlsOutcome {
    let timeout = pool.ctx().timeout;
    let keep = credssp_via.is_some();
    // 1. versions, by range
    let mut hs: [Option<Handshake>; 4] = [None, None, None, None];
    let firsts = join_all(
        [3usize, 2, 1].map(|m| async move { (m, handshake(pool, &Offer::range(m), keep).await) }),
    )
    .await;
    for (m, h) in firsts {
        hs[m] = Some(h);
    }
    let answers = |hs: &[Option<Handshake>; 4]| {
        let ranges: [Option<RangeAnswer>; 4] =
            std::array::from_fn(|i| hs[i].as_ref().map(Handshake::answer));
        version_answers(&ranges)
    };
    if answers(&hs)[0] == VersionAnswer::Ask {
        hs[0] = Some(handshake(pool, &Offer::range(0), keep).await);
    }
    let answers = answers(&hs);
    // 2. CredSSP on the first kept stream; the other streams are closed.
    let mut rider = None;
    for h in hs.iter_mut().flatten() {
        if let Some(mut s) = h.stream.take() {
            if rider.is_none() {
                rider = Some(s);
            } else {
                use tokio::io::AsyncWriteExt;
                let _ = tokio::time::timeout(Duration::from_millis(200), s.shutdown()).await;
            }
        }
    }
    let credssp_fut = async {
        let via = credssp_via?;
        Some(match rider {
            Some(mut s) => credssp_on(&mut s, timeout, via).await,
            None => CredsspEnum {
                via: via.to_owned(),
                error: Some(format!(
                    "tls: no handshake succeeded ({})",
                    hs.iter()
                        .flatten()
                        .find_map(|h| h.error.clone())
                        .unwrap_or_default()
                )),
                ..CredsspEnum::default()
            },
        })
    };
    // 3. suites, one elimination per accepted version, all versions at once
    let accepted: Vec<(usize, (String, String))> = answers
        .iter()
        .enumerate()
        .filter_map(|(v, a)| match a {
            VersionAnswer::Accepted { by } => hs[*by]
                .as_ref()
                .and_then(|h| h.suite.clone())
                .map(|s| (v, s)),
            _ => None,
        })
        .collect();
    let elim_fut = join_all(accepted.iter().map(|(v, first)| {
        let first = first.clone();
        async move {
            if skip_ciphers {
                (*v, (vec![first], 1, false, Preference::Unknown, None))
            } else {
                (*v, eliminate(pool, *v, first, limit, prefetch).await)
            }
        }
    }));
    let (credssp, elims) = tokio::join!(credssp_fut, elim_fut);
    let mut versions: Vec<TlsVersionResult> = TLS_VERSIONS
        .iter()
        .zip(answers.iter())
        .map(|((v, _), a)| TlsVersionResult {
            version: version_name(*v),
            accepted: false,
            cipher_suites: Vec::new(),
            preference: Preference::Unknown,
            attempts: 0,
            truncated: false,
            error: match a {
                VersionAnswer::Refused(e) => Some(e.clone()),
                VersionAnswer::Ask => Some("not asked".into()),
                VersionAnswer::Accepted { .. } => None,
            },
        })
        .collect();
    for (v, (found, attempts, truncated, pref, error)) in elims {
        let r = &mut versions[v];
        r.accepted = true;
        r.cipher_suites = found.into_iter().map(|f| f.1).collect();
        r.attempts = attempts;
        r.truncated = truncated;
        r.preference = pref;
        r.error = error;
    }
    // The certificate of the newest version's handshake (what a modern client sees).
    let certificate = hs
        .iter()
        .rev()
        .flatten()
        .find(|h| !h.chain.is_empty())
        .and_then(|h| super::audit(&h.chain[0], h.chain.len(), host));
    TlsOutcome {
        tls: TlsEnum {
            via: super::dx::protocol_names(pool.via()).join(","),
            versions,
            offered:
                "versions: hellos offering TLS 1.0 up to 1.3, 1.2 and 1.1 (and 1.0 alone when \
                      the server picks 1.1); suites: one version at a time, OpenSSL's \
                      ALL:COMPLEMENTOFALL at @SECLEVEL=0 (TLS 1.3: the five RFC 8446 suites) less \
                      the suites already picked (ChaCha20 late), until the server refuses; the second \
                      hello moves the first pick last to tell whose preference decides; a server that follows \
                      the client's order is offered a likely suite last, and picking it ends the \
                      list"
                    .into(),
            certificate,
        },
        credssp,
    }
}

/// The CredSSP question on a TLS stream (the server selected HYBRID or HYBRID_EX).
pub(super) async fn credssp_on(
    s: &mut SslStream<TcpStream>,
    timeout: Duration,
    via: &str,
) -> CredsspEnum {
    let t0 = Instant::now();
    let r = super::ntlm::challenge(s, timeout).await;
    tracing::debug!(
        ms = t0.elapsed().as_millis() as u64,
        ok = r.is_ok(),
        "enum: credssp challenge"
    );
    {
        use tokio::io::AsyncWriteExt;
        let _ = tokio::time::timeout(Duration::from_millis(200), s.shutdown()).await;
    }
    match r {
        Ok(c) => CredsspEnum {
            via: via.to_owned(),
            version: Some(u64::from(c.version)),
            nb_computer_name: c.ntlm.nb_computer_name,
            nb_domain_name: c.ntlm.nb_domain_name,
            dns_computer_name: c.ntlm.dns_computer_name,
            dns_domain_name: c.ntlm.dns_domain_name,
            dns_tree_name: c.ntlm.dns_tree_name,
            os_version: c.ntlm.os_version,
            server_time: c.ntlm.server_time,
            error: c.ntlm.error.map(|e| format!("credssp: {e}")),
        },
        Err(e) => CredsspEnum {
            via: via.to_owned(),
            error: Some(format!("credssp: {e}")),
            ..CredsspEnum::default()
        },
    }
}

/// The CredSSP question on its own connection (a handshake offering everything first).
pub(super) async fn credssp_alone(s: TcpStream, timeout: Duration, via: &str) -> CredsspEnum {
    let mut h = handshake_on(s, &Offer::range(TLS13), timeout, true).await;
    match h.stream.as_mut() {
        Some(s) => credssp_on(s, timeout, via).await,
        None => CredsspEnum {
            via: via.to_owned(),
            error: Some(format!("tls: {}", h.error.unwrap_or_default())),
            ..CredsspEnum::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_modern_server_is_answered_by_three_range_hellos() {
        // TLS 1.2 and 1.3: up to 1.3 → 1.3, up to 1.2 → 1.2, up to 1.1 → alert.
        let a = version_answers(&[
            None,
            Some(Err("protocol version".into())),
            Some(Ok(2)),
            Some(Ok(3)),
        ]);
        assert_eq!(a[3], VersionAnswer::Accepted { by: 3 });
        assert_eq!(a[2], VersionAnswer::Accepted { by: 2 });
        assert_eq!(a[1], VersionAnswer::Refused("protocol version".into()));
        assert_eq!(a[0], VersionAnswer::Refused("protocol version".into()));
    }

    #[test]
    fn a_lower_pick_refuses_the_top_of_the_range() {
        // TLS 1.2 only: up to 1.3 → 1.2.
        let a = version_answers(&[None, Some(Err("x".into())), Some(Ok(2)), Some(Ok(2))]);
        assert!(matches!(&a[3], VersionAnswer::Refused(e) if e.contains("chose TLSv1.2")));
        assert_eq!(a[2], VersionAnswer::Accepted { by: 2 });
        // TLS 1.0 and 1.2: up to 1.1 → 1.0 answers both 1.1 (no) and 1.0 (yes).
        let a = version_answers(&[None, Some(Ok(0)), Some(Ok(2)), Some(Ok(2))]);
        assert!(matches!(&a[1], VersionAnswer::Refused(e) if e.contains("chose TLSv1.0")));
        assert_eq!(a[0], VersionAnswer::Accepted { by: 1 });
    }

    #[test]
    fn tls_1_1_chosen_leaves_tls_1_0_to_ask() {
        let a = version_answers(&[None, Some(Ok(1)), Some(Ok(1)), Some(Ok(1))]);
        assert_eq!(a[1], VersionAnswer::Accepted { by: 1 });
        assert_eq!(a[0], VersionAnswer::Ask);
        let a = version_answers(&[Some(Ok(0)), Some(Ok(1)), Some(Ok(1)), Some(Ok(1))]);
        assert_eq!(a[0], VersionAnswer::Accepted { by: 0 });
        let a = version_answers(&[
            Some(Err("alert".into())),
            Some(Ok(1)),
            Some(Ok(1)),
            Some(Ok(1)),
        ]);
        assert_eq!(a[0], VersionAnswer::Refused("alert".into()));
    }

    #[test]
    fn preference_needs_two_suites_and_the_second_step() {
        assert_eq!(preference("A", Some("A"), 3), Preference::Server);
        assert_eq!(preference("A", Some("B"), 3), Preference::Client);
        assert_eq!(preference("A", Some("B"), 2), Preference::Client);
        // One suite: the server had no choice.
        assert_eq!(preference("A", Some("A"), 1), Preference::Unknown);
        assert_eq!(preference("A", None, 2), Preference::Unknown);
    }

    #[test]
    fn offers_exclude_what_was_found_and_move_the_first_last() {
        let o = Offer::without(2, &["AES128-SHA".into(), "AES256-SHA".into()]);
        assert_eq!((o.min, o.max), (2, 2));
        assert_eq!(
            o.ciphers,
            "ALL:COMPLEMENTOFALL:!AES128-SHA:!AES256-SHA:+CHACHA20"
        );
        let o = Offer::without(3, &["TLS_AES_128_GCM_SHA256".into()]);
        assert_eq!(o.suites13.split(':').count(), 4);
        assert!(!o.suites13.contains("TLS_AES_128_GCM_SHA256"));
        let o = Offer::order_check(3, "TLS_AES_256_GCM_SHA384", None);
        assert!(o.suites13.ends_with(":TLS_AES_256_GCM_SHA384"));
        assert_eq!(o.suites13.split(':').count(), 5);
        assert_eq!(
            Offer::order_check(1, "AES128-SHA", None).ciphers,
            "ALL:COMPLEMENTOFALL:+CHACHA20:+AES128-SHA"
        );
        assert!(Offer::without(3, &TLS13_SUITES.map(String::from)).is_empty());
    }

    #[test]
    fn groups_offer_their_own_suites_and_rank_by_key_exchange() {
        let o = Offer::without_in(2, "kDHE", &["DHE-RSA-AES128-SHA".into()]);
        assert_eq!(o.ciphers, "kDHE:!DHE-RSA-AES128-SHA");
        assert!(ssl_for(&o).is_ok());
        let mut v = vec![
            "TLS_RSA_WITH_AES_128_CBC_SHA",
            "TLS_DHE_RSA_WITH_AES_128_CBC_SHA",
            "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
            "TLS_RSA_WITH_AES_256_CBC_SHA",
        ];
        v.sort_by_key(|s| kx_rank(s));
        assert_eq!(
            v,
            [
                "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
                "TLS_DHE_RSA_WITH_AES_128_CBC_SHA",
                "TLS_RSA_WITH_AES_128_CBC_SHA",
                "TLS_RSA_WITH_AES_256_CBC_SHA"
            ]
        );
        // OpenSSL names rank the same, by their group in KX_GROUPS.
        for (name, rank) in [
            ("ECDHE-RSA-AES128-GCM-SHA256", 0),
            ("ECDHE-ECDSA-AES128-SHA", 0),
            ("DHE-RSA-AES128-SHA", 1),
            ("AES128-SHA", 2),
            ("TLS_AES_128_GCM_SHA256", 2),
            ("TLS_DHE_RSA_WITH_AES_128_CBC_SHA", 1),
        ] {
            assert_eq!(kx_rank(name), rank, "{name}");
        }
    }

    #[test]
    fn the_guess_goes_second_to_last_in_the_order_check_and_last_after() {
        let o = Offer::order_check(3, "TLS_AES_128_GCM_SHA256", Some("TLS_AES_256_GCM_SHA384"));
        assert_eq!(
            o.suites13,
            "TLS_AES_128_CCM_SHA256:TLS_AES_128_CCM_8_SHA256:TLS_CHACHA20_POLY1305_SHA256:\
             TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256"
        );
        let o = Offer::order_check(2, "A", Some("B"));
        assert_eq!(o.ciphers, "ALL:COMPLEMENTOFALL:+CHACHA20:+B:+A");
        assert_eq!((o.min, o.max), (2, 2));
        // No guess, or the guess is the first pick: the first pick last, nothing else moved.
        assert_eq!(
            Offer::order_check(2, "A", None).ciphers,
            "ALL:COMPLEMENTOFALL:+CHACHA20:+A"
        );
        assert_eq!(
            Offer::order_check(2, "A", Some("A")),
            Offer::order_check(2, "A", None)
        );
        let o = Offer::without_last(
            3,
            &["TLS_CHACHA20_POLY1305_SHA256".into()],
            Some("TLS_AES_256_GCM_SHA384"),
        );
        assert_eq!(
            o.suites13,
            "TLS_AES_128_GCM_SHA256:TLS_AES_128_CCM_SHA256:TLS_AES_128_CCM_8_SHA256:\
             TLS_AES_256_GCM_SHA384"
        );
        let o = Offer::without_last(2, &["A".into()], Some("B"));
        assert_eq!(o.ciphers, "ALL:COMPLEMENTOFALL:!A:+CHACHA20:+B");
        // A guess already found is not offered again.
        let o = Offer::without_last(2, &["B".into()], Some("B"));
        assert_eq!(o.ciphers, "ALL:COMPLEMENTOFALL:!B:+CHACHA20");
    }

    #[test]
    fn the_guess_follows_version_and_certificate() {
        assert_eq!(
            likely_last(3, "TLS_AES_128_GCM_SHA256"),
            Some("TLS_AES_256_GCM_SHA384")
        );
        assert_eq!(
            likely_last(3, "TLS_CHACHA20_POLY1305_SHA256"),
            Some("TLS_AES_128_GCM_SHA256")
        );
        assert_eq!(
            likely_last(2, "ECDHE-RSA-AES256-GCM-SHA384"),
            Some("ECDHE-RSA-AES128-GCM-SHA256")
        );
        assert_eq!(
            likely_last(2, "ECDHE-RSA-AES128-GCM-SHA256"),
            Some("ECDHE-RSA-AES256-GCM-SHA384")
        );
        assert_eq!(
            likely_last(2, "ECDHE-ECDSA-AES256-GCM-SHA384"),
            Some("ECDHE-ECDSA-AES128-GCM-SHA256")
        );
        // No GCM before TLS 1.2.
        assert_eq!(likely_last(1, "AES256-SHA"), Some("ECDHE-RSA-AES128-SHA"));
        assert_eq!(
            likely_last(0, "ECDHE-ECDSA-AES256-SHA"),
            Some("ECDHE-ECDSA-AES128-SHA")
        );
        // Every guess is a suite OpenSSL offers for that version, in the group it is looked for.
        for v in 0..3 {
            let offered = openssl_order(v);
            assert!(!offered.is_empty(), "openssl offers suites for version {v}");
            for first in ["ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES256-SHA", "X"] {
                let g = likely_last(v, first).expect("a guess");
                let named = offered_names(&Offer {
                    ciphers: g.to_owned(),
                    ..Offer::without_in(v, ALL_12, &[])
                });
                assert_eq!(named.len(), 1, "{g} is one OpenSSL suite for version {v}");
                assert!(offered.contains(&named[0]), "{g} offered for version {v}");
                assert_eq!(kx_rank(g), kx_rank(&named[0]), "{g}");
            }
        }
    }

    #[test]
    fn no_elimination_offer_leads_with_chacha20() {
        // OpenSSL's order leads with AES-GCM; after those are found ChaCha20 would lead.
        let found: Vec<String> = [
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            "ECDHE-RSA-AES256-GCM-SHA384",
            "DHE-DSS-AES256-GCM-SHA384",
            "DHE-RSA-AES256-GCM-SHA384",
        ]
        .map(String::from)
        .into();
        for o in [
            Offer::without(2, &found),
            Offer::order_check(2, "ECDHE-RSA-AES256-GCM-SHA384", Some("AES128-SHA")),
        ] {
            let names = offered_names(&o);
            let first = names.first().expect("offer builds");
            assert!(!first.contains("CHACHA20"), "{first} leads {:?}", o.ciphers);
            assert!(
                names.iter().any(|n| n.contains("CHACHA20")),
                "chacha20 still offered"
            );
        }
        let o = Offer::without(
            3,
            &[
                "TLS_AES_128_GCM_SHA256".into(),
                "TLS_AES_256_GCM_SHA384".into(),
            ],
        );
        assert!(!o.suites13.starts_with("TLS_CHACHA20"), "{}", o.suites13);
    }

    #[test]
    fn openssl_order_reads_the_hello_it_would_send() {
        let names = openssl_order(2);
        // OpenSSL 3 at @SECLEVEL=0 leads with its strongest ECDHE suites and offers the RSA
        // key exchange suites as well.
        assert!(names.len() > 20, "{names:?}");
        assert!(
            names.iter().any(|n| n == "TLS_RSA_WITH_AES_128_CBC_SHA"),
            "{names:?}"
        );
        let pos = |n: &str| names.iter().position(|x| x == n).expect(n);
        assert!(
            pos("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384")
                < pos("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA")
        );
        // TLS 1.3 suites are not offered for TLS 1.2 alone, nor signalling values; suites the
        // decoder's table does not name (ARIA, PSK…) have their names too.
        assert!(
            !names.iter().any(|n| n.starts_with("TLS_AES_")),
            "{names:?}"
        );
        assert!(!names.iter().any(|n| n.contains("SCSV")), "{names:?}");
        assert!(!names.iter().any(|n| n.starts_with("0x")), "{names:?}");
        assert!(names.iter().any(|n| n.contains("ARIA")), "{names:?}");
        assert!(client_hello_suites(&[]).is_empty());
        assert!(client_hello_suites(&[0x16, 3, 1, 0, 200, 1]).is_empty());
    }

    #[test]
    fn every_offer_builds_an_openssl_client() {
        for v in 0..4 {
            assert!(ssl_for(&Offer::range(v)).is_ok(), "range {v}");
            assert!(ssl_for(&Offer::without(v, &["AES128-SHA".into()])).is_ok());
            assert!(ssl_for(&Offer::order_check(v, "AES128-SHA", None)).is_ok());
        }
    }
}
