//! The labels of a metered encoder: the application's own ([`MetricLabels`]), and the scope
//! that hands them to what the wrapped encoder records itself (the fallback chain's failovers).

use std::cell::Cell;
use std::sync::Arc;

use ::metrics::{Label, SharedString};

use super::RESERVED_LABELS;
use crate::encoder::{Codec, EncoderKind};

/// An application's own labels (a stream or camera id), added to every metric of one encoder.
///
/// Cheap to clone (shared).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricLabels(Arc<[Label]>);

/// A label [`MetricLabels`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LabelError {
    /// The crate sets this label itself.
    #[error("metric label {name:?} is set by the crate itself; reserved: {reserved:?}")]
    Reserved {
        /// The refused name.
        name: String,
        /// Every reserved name.
        reserved: &'static [&'static str],
    },
    /// Not a Prometheus label name.
    #[error(
        "metric label name {name:?} is not valid: it must match [a-zA-Z_][a-zA-Z0-9_]* and not \
         start with \"__\""
    )]
    InvalidName {
        /// The refused name.
        name: String,
    },
    /// Given twice.
    #[error("metric label {name:?} is given twice")]
    Duplicate {
        /// The repeated name.
        name: String,
    },
}

impl MetricLabels {
    /// No labels of the application's.
    #[must_use]
    pub fn new() -> Self {
        MetricLabels::default()
    }

    /// Adds a label.
    ///
    /// # Errors
    /// [`LabelError`] for a name the crate sets itself ([`RESERVED_LABELS`]), one that is not a
    /// Prometheus label name, or one already given.
    pub fn with(
        self,
        name: impl Into<SharedString>,
        value: impl Into<SharedString>,
    ) -> Result<Self, LabelError> {
        let name: SharedString = name.into();
        let key: &str = name.as_ref();
        if RESERVED_LABELS.contains(&key) {
            return Err(LabelError::Reserved {
                name: key.to_owned(),
                reserved: RESERVED_LABELS,
            });
        }
        let mut chars = key.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !key.starts_with("__");
        if !valid {
            return Err(LabelError::InvalidName {
                name: key.to_owned(),
            });
        }
        if self.0.iter().any(|l| l.key() == key) {
            return Err(LabelError::Duplicate {
                name: key.to_owned(),
            });
        }
        let mut labels = self.0.to_vec();
        labels.push(Label::new(name, value));
        Ok(MetricLabels(labels.into()))
    }

    /// The labels, in the order given.
    #[must_use]
    pub fn labels(&self) -> &[Label] {
        &self.0
    }

    /// These labels plus `encoder_type`, `codec` and `extra`.
    pub(super) fn with_kind(&self, kind: EncoderKind, codec: Codec, extra: &[Label]) -> Vec<Label> {
        let mut labels = Vec::with_capacity(self.0.len() + 2 + extra.len());
        labels.extend_from_slice(&self.0);
        labels.push(Label::from_static_parts("encoder_type", kind.name()));
        labels.push(Label::from_static_parts("codec", codec.name()));
        labels.extend_from_slice(extra);
        labels
    }
}

thread_local! {
    /// The labels of the [`Metered`] encoder whose call is running on this thread, for what the
    /// wrapped encoder records itself (the fallback chain's failovers).
    static SCOPE: Cell<Option<MetricLabels>> = const { Cell::new(None) };
}

/// Restores the previous scope when a metered call returns (or unwinds).
pub(super) struct ScopeGuard(Option<MetricLabels>);

impl ScopeGuard {
    pub(super) fn enter(labels: &MetricLabels) -> ScopeGuard {
        ScopeGuard(SCOPE.with(|s| s.replace(Some(labels.clone()))))
    }
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        let previous = self.0.take();
        SCOPE.with(|s| s.set(previous));
    }
}

pub(super) fn scope_labels() -> MetricLabels {
    SCOPE.with(|s| {
        let labels = s.take();
        let copy = labels.clone().unwrap_or_default();
        s.set(labels);
        copy
    })
}
