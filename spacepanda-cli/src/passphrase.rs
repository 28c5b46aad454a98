//! The passphrase that seals a data directory: from `SPACEPANDA_PASSPHRASE`, or asked on the
//! terminal without echo. Never from an argument, where other users of the machine could read
//! it in the process list.

use std::io::IsTerminal;

use zeroize::Zeroizing;

use crate::error::CliError;

/// The environment variable read first.
pub(crate) const PASSPHRASE_VAR: &str = "SPACEPANDA_PASSPHRASE";

/// Whether the passphrase sets up something new (asked twice) or opens what exists.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    Create,
    Open,
}

/// The passphrase for `what` (words for the prompt).
pub(crate) fn read(what: &str, purpose: Purpose) -> Result<Zeroizing<String>, CliError> {
    if let Some(value) = std::env::var_os(PASSPHRASE_VAR) {
        let value = Zeroizing::new(value.into_string().map_err(|_| CliError::NoPassphrase)?);
        return non_empty(value);
    }
    // rpassword reads the terminal itself, so stdin stays free for the chat session; without
    // a terminal there is no one to ask.
    if !std::io::stderr().is_terminal() && !std::io::stdin().is_terminal() {
        return Err(CliError::NoPassphrase);
    }
    let first = Zeroizing::new(
        rpassword::prompt_password(format!("passphrase for {what}: "))
            .map_err(|_| CliError::NoPassphrase)?,
    );
    let first = non_empty(first)?;
    if purpose == Purpose::Create {
        let again = Zeroizing::new(
            rpassword::prompt_password("the same passphrase again: ")
                .map_err(|_| CliError::NoPassphrase)?,
        );
        if *again != *first {
            return Err(CliError::PassphraseMismatch);
        }
    }
    Ok(first)
}

fn non_empty(value: Zeroizing<String>) -> Result<Zeroizing<String>, CliError> {
    if value.is_empty() {
        Err(CliError::EmptyPassphrase)
    } else {
        Ok(value)
    }
}
