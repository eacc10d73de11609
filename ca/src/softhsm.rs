//! SoftHSM2 test fixture: every test gets its own token directory, in its own
//! process.
//!
//! ```ignore
//! #[test]
//! fn signs_with_a_token_key() {
//!     ca::softhsm::isolated(|| {
//!         let t = ca::softhsm::TestToken::new().unwrap();
//!         let token = t.open().unwrap();
//!         token.generate_key("ca", None, KeySpec::Rsa { bits: 2048 }).unwrap();
//!         // …
//!     });
//! }
//! ```
//!
//! ## Why a process per test
//! SoftHSM2 reads `SOFTHSM2_CONF` (and so its token directory) once, at
//! `C_Initialize`, and a process has exactly one initialised context per module
//! ([`Pkcs11Module`]). Setting the variable from inside the test would need
//! `std::env::set_var`, which is `unsafe` in edition 2024 (racy with other test
//! threads) and forbidden in this workspace. So [`isolated`] re-runs the current
//! test binary for just the calling test (`<name> --exact`), with `SOFTHSM2_CONF`
//! pointing at a fresh temporary directory; the body runs in that child, and the
//! parent reports the child's output and fails if it failed. Tests stay runnable in
//! parallel under plain `cargo test`, share nothing, and leave nothing behind (the
//! directory is removed when the parent returns).
//!
//! Inside the child, SoftHSM2 starts with one free slot and adds a new free slot
//! after every C_InitToken (verified with 2.6.1), so a test can create several
//! tokens with [`TestToken::new`] without re-initialising the library.
//!
//! ## How tests get the fixture
//! The module is compiled for the crate's own unit tests and with the
//! `softhsm-fixture` feature. `ca/Cargo.toml` has a self dev-dependency
//! `ca = { path = ".", features = ["softhsm-fixture"] }`, so integration tests in
//! `ca/tests/` see `ca::softhsm` under plain `cargo test -p ca`; other crates'
//! tests enable the feature the same way in their `[dev-dependencies]`.
//!
//! Requires Debian's `softhsm2` package ([`SOFTHSM2_MODULE`]).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{Error, Result};
use crate::signer::Pin;
use crate::signer::pkcs11::{Pkcs11Module, SOFTHSM2_MODULE, Token};

/// Set (to the test name) in the child process that runs an [`isolated`] body.
pub const CHILD_ENV: &str = "CHOP_SOFTHSM_ISOLATED";

/// The token directory of the child (set by [`isolated`]).
pub const TOKEN_DIR_ENV: &str = "CHOP_SOFTHSM_TOKEN_DIR";

/// Whether this process is the child of an [`isolated`] test.
pub fn in_isolated_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// Run `body` in a child process that has its own SoftHSM2 configuration and token
/// directory (see the module doc). Call it as the whole body of a `#[test]`; the
/// test's name is taken from the test thread, as libtest names it.
///
/// In the child, `body` runs directly. In the parent, this spawns the child and
/// panics with the child's output if the child's test failed or did not run.
pub fn isolated(body: impl FnOnce()) {
    if in_isolated_child() {
        body();
        return;
    }
    if let Err(e) = spawn_child() {
        // The fixture exists to fail tests; a panic is the test failure.
        #[allow(clippy::panic)]
        {
            panic!("{e}");
        }
    }
}

/// The parent side of [`isolated`].
fn spawn_child() -> std::result::Result<(), String> {
    let thread = std::thread::current();
    let name = thread
        .name()
        .filter(|n| *n != "main")
        .ok_or("softhsm::isolated must be called from a libtest test thread")?
        .to_string();
    let (_dir, tokens, conf) = private_token_dir()?;
    let exe = std::env::current_exe().map_err(|e| format!("current test binary: {e}"))?;
    let out = Command::new(exe)
        .args([
            name.as_str(),
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &name)
        .env(TOKEN_DIR_ENV, &tokens)
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .map_err(|e| format!("cannot run the test child: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Shown by libtest when the test fails (or with --nocapture).
    print!("{stdout}");
    eprint!("{stderr}");
    if !out.status.success() {
        return Err(format!(
            "isolated SoftHSM2 test {name} failed ({})",
            out.status
        ));
    }
    // A filter that matched nothing also exits 0: insist the test really ran.
    if !stdout.contains("1 passed") {
        return Err(format!(
            "isolated SoftHSM2 test {name} did not run in the child"
        ));
    }
    Ok(())
}

/// A fresh temporary directory with a `softhsm2.conf` whose token directory is
/// inside it: (the directory, its token directory, the conf file).
fn private_token_dir() -> std::result::Result<(tempfile::TempDir, PathBuf, PathBuf), String> {
    let dir = tempfile::Builder::new()
        .prefix("chop-softhsm-")
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?;
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).map_err(|e| format!("{}: {e}", tokens.display()))?;
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            tokens.display()
        ),
    )
    .map_err(|e| format!("{}: {e}", conf.display()))?;
    Ok((dir, tokens, conf))
}

/// For example programs and benchmarks (not tests): run the rest of this program
/// with a private, temporary SoftHSM2 token directory.
///
/// In the parent this re-runs the current executable with the same arguments and
/// `SOFTHSM2_CONF` pointing at a fresh directory, waits, removes the directory and
/// returns `Some(exit status)`: the caller exits with it. In the child it returns
/// `None`: the caller goes on, and [`TestToken::new`] works. Same reason as
/// [`isolated`]: `SOFTHSM2_CONF` must be set before `C_Initialize`, and setting it
/// in-process is `unsafe`.
pub fn with_private_token_dir() -> Result<Option<std::process::ExitStatus>> {
    if in_isolated_child() {
        return Ok(None);
    }
    let fail = |detail: String| Error::ModuleLoad {
        module: SOFTHSM2_MODULE.into(),
        detail,
    };
    let (dir, tokens, conf) = private_token_dir().map_err(fail)?;
    let exe = std::env::current_exe().map_err(|e| fail(format!("current executable: {e}")))?;
    let status = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(CHILD_ENV, "main")
        .env(TOKEN_DIR_ENV, &tokens)
        .env("SOFTHSM2_CONF", &conf)
        .status()
        .map_err(|e| fail(format!("cannot re-run this program: {e}")))?;
    drop(dir);
    Ok(Some(status))
}

/// A fresh SoftHSM2 token with a unique label and random SO and user PINs, created
/// in the token directory of the current [`isolated`] child.
pub struct TestToken {
    /// The module (the process's one SoftHSM2 context).
    pub module: Arc<Pkcs11Module>,
    /// Token label, unique in the process (`t<pid>-<n>`).
    pub label: String,
    /// Security-officer PIN.
    pub so_pin: Pin,
    /// User PIN.
    pub user_pin: Pin,
}

impl std::fmt::Debug for TestToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestToken")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl TestToken {
    /// Create and initialise a new token. Only inside [`isolated`]: elsewhere
    /// SoftHSM2 would use the system-wide token directory, which tests must not
    /// touch, so this refuses.
    pub fn new() -> Result<TestToken> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        if !in_isolated_child() {
            return Err(Error::ModuleLoad {
                module: SOFTHSM2_MODULE.into(),
                detail: "softhsm::TestToken::new must run inside softhsm::isolated".into(),
            });
        }
        let module = Pkcs11Module::open(SOFTHSM2_MODULE)?;
        let label = format!(
            "t{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let so_pin = random_pin()?;
        let user_pin = random_pin()?;
        module.init_token(&label, &so_pin, &user_pin)?;
        Ok(TestToken {
            module,
            label,
            so_pin,
            user_pin,
        })
    }

    /// Open the token with the user PIN.
    pub fn open(&self) -> Result<Token> {
        Token::open(&self.module, &self.label, self.user_pin.clone())
    }

    /// The child's token directory (to simulate a token that goes away).
    pub fn token_dir() -> Option<PathBuf> {
        std::env::var_os(TOKEN_DIR_ENV).map(PathBuf::from)
    }
}

/// A random 16-hex-digit PIN.
fn random_pin() -> Result<Pin> {
    let mut bytes = [0u8; 8];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| Error::SoftwareKey("random PIN".into()))?;
    Ok(Pin::new(
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(),
    ))
}
