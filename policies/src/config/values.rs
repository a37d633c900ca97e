//! Reading one configuration value: sizes, durations, addresses, counts and fractions, each
//! checked and reported with its place in the file (the checker's building blocks).

use std::net::SocketAddr;
use std::time::Duration;

use toml::Spanned;

use super::check::Checker;
use super::raw::Text;
use crate::units::{parse_duration, parse_size};

impl Checker<'_> {
    pub(super) fn size(&mut self, value: &Text, default: u64, key: &str) -> u64 {
        let Some(text) = value else { return default };
        parse_size(text.get_ref()).unwrap_or_else(|e| {
            self.report(text.span(), format!("{key}: {e}"));
            default
        })
    }

    pub(super) fn duration(&mut self, value: &Text, default: Duration, key: &str) -> Duration {
        let Some(text) = value else { return default };
        parse_duration(text.get_ref()).unwrap_or_else(|e| {
            self.report(text.span(), format!("{key}: {e}"));
            default
        })
    }

    /// A duration that must not be zero: a zero timeout would fail every request at once.
    pub(super) fn nonzero_duration(&mut self, value: &Text, default: Duration, key: &str) -> Duration {
        let d = self.duration(value, default, key);
        if d.is_zero() {
            let span = value.as_ref().map(|v| v.span()).unwrap_or(0..0);
            self.report(span, format!("{key} must be longer than 0"));
            return default;
        }
        d
    }

    pub(super) fn socket_addr(&mut self, text: &Spanned<String>, key: &str) -> Option<SocketAddr> {
        match text.get_ref().parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                let message = format!(
                    "{key}: {:?} is not an IP address with a port, e.g. \"127.0.0.1:8080\" or \"[::]:8080\"",
                    text.get_ref()
                );
                self.report(text.span(), message);
                None
            }
        }
    }

    /// A whole number of 0 or more (0 usually meaning "no limit").
    pub(super) fn count(&mut self, value: &Option<Spanned<i64>>, default: usize, key: &str) -> usize {
        let Some(number) = value else { return default };
        usize::try_from(*number.get_ref()).unwrap_or_else(|_| {
            self.report(number.span(), format!("{key} must be a whole number, 0 or more (0: no limit)"));
            default
        })
    }

    pub(super) fn positive(&mut self, value: &Option<Spanned<i64>>, default: usize, key: &str) -> usize {
        let Some(number) = value else { return default };
        match usize::try_from(*number.get_ref()) {
            Ok(n) if n > 0 => n,
            _ => {
                self.report(number.span(), format!("{key} must be a positive whole number"));
                default
            }
        }
    }

    /// A number between 0 and 1.
    pub(super) fn fraction(&mut self, value: &Option<Spanned<f64>>, default: f64, key: &str) -> f64 {
        match value {
            Some(number) if !(0.0..=1.0).contains(number.get_ref()) => {
                self.report(number.span(), format!("{key} must be between 0 and 1"));
                default
            }
            Some(number) => *number.get_ref(),
            None => default,
        }
    }
}
