//! A sandbox's lifecycle state and the state machine that says which moves are allowed.
//!
//! ```text
//! creating → running ⇄ paused
//!               ↘        ↓
//!                 stopping → stopped → (deleted)
//! any other state → failed → (deleted)
//! ```

use std::fmt;
use std::str::FromStr;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::{Deserialize, Serialize};

/// Where a sandbox is in its life; stored as its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SbState {
    Creating,
    Running,
    Paused,
    Stopping,
    Stopped,
    Failed,
}

impl SbState {
    pub const ALL: [SbState; 6] = [
        SbState::Creating,
        SbState::Running,
        SbState::Paused,
        SbState::Stopping,
        SbState::Stopped,
        SbState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SbState::Creating => "creating",
            SbState::Running => "running",
            SbState::Paused => "paused",
            SbState::Stopping => "stopping",
            SbState::Stopped => "stopped",
            SbState::Failed => "failed",
        }
    }
}

impl fmt::Display for SbState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name is not one of the six states.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sandbox state {0:?}: use creating, running, paused, stopping, stopped or failed")]
pub struct UnknownState(pub String);

impl FromStr for SbState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SbState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

impl ToSql for SbState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for SbState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value
            .as_str()?
            .parse()
            .map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}

/// Whether a sandbox may move from `from` to `to`. A state never moves to itself.
pub fn allowed(from: SbState, to: SbState) -> bool {
    use SbState::*;
    match (from, to) {
        (Failed, _) => false,
        (_, Failed) => true,
        (Creating, Running) => true,
        (Running, Paused) | (Paused, Running) => true,
        (Running | Paused, Stopping) => true,
        (Stopping, Stopped) => true,
        _ => false,
    }
}

/// Whether a sandbox in `state` may be deleted from the store (it must be down).
pub fn deletable(state: SbState) -> bool {
    matches!(state, SbState::Stopped | SbState::Failed)
}

#[cfg(test)]
mod tests {
    use super::SbState::*;
    use super::*;

    #[test]
    fn the_full_transition_matrix() {
        // Rows: from; columns: to, in the order of SbState::ALL.
        //                    creating running paused stopping stopped failed
        let expect: [(SbState, [bool; 6]); 6] = [
            (Creating, [false, true, false, false, false, true]),
            (Running, [false, false, true, true, false, true]),
            (Paused, [false, true, false, true, false, true]),
            (Stopping, [false, false, false, false, true, true]),
            (Stopped, [false, false, false, false, false, true]),
            (Failed, [false, false, false, false, false, false]),
        ];
        for (from, row) in expect {
            for (to, want) in SbState::ALL.into_iter().zip(row) {
                assert_eq!(allowed(from, to), want, "{from} -> {to}");
            }
        }
        let deletable_states: Vec<_> = SbState::ALL.into_iter().filter(|s| deletable(*s)).collect();
        assert_eq!(deletable_states, vec![Stopped, Failed]);
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for s in SbState::ALL {
            assert_eq!(s.as_str().parse::<SbState>().unwrap(), s);
            assert_eq!(s.to_string(), s.as_str());
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        let e = "Running".parse::<SbState>().unwrap_err();
        assert!(e.to_string().contains("unknown sandbox state \"Running\""));
    }
}
