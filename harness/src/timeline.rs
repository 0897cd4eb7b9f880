//! Timelines: one column per actor, one row per step, as in seed 001's
//! "Time / Worker A / Worker B / Worker C" table.

use comfy_table::presets::ASCII_MARKDOWN;
use comfy_table::{ContentArrangement, Table};
use serde::Serialize;

use crate::explore::{ChoiceKind, Event};

/// A rendered schedule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Timeline {
    pub actors: Vec<String>,
    /// `(actor, cell text)` per step.
    pub steps: Vec<(usize, String)>,
}

impl Timeline {
    pub fn new(actors: Vec<String>, events: &[Event]) -> Timeline {
        let mut steps = Vec::with_capacity(events.len());
        for e in events {
            // A power loss belongs to no actor (its `actor` field picks the durable state): it
            // is shown in the first column.
            let actor = e.choice.actor_index().unwrap_or(0);
            let mut text = e.text.clone();
            if matches!(e.choice.kind, ChoiceKind::Crash | ChoiceKind::PowerLoss) && !e.also_crashed.is_empty() {
                let others: Vec<&str> = e.also_crashed.iter().map(|&a| actors[a].as_str()).collect();
                text = format!("{text} (with {})", others.join(", "));
            }
            steps.push((actor, text));
        }
        Timeline { actors, steps }
    }

    /// A plain-text table; cells wrap so that it fits `width` columns.
    pub fn render(&self, width: u16) -> String {
        let mut table = Table::new();
        table.load_preset(ASCII_MARKDOWN).set_content_arrangement(ContentArrangement::Dynamic).set_width(width);
        let mut header = vec!["Time".to_string()];
        header.extend(self.actors.iter().cloned());
        table.set_header(header);
        for (t, (actor, text)) in self.steps.iter().enumerate() {
            let mut row = vec![format!("T{t}")];
            row.extend((0..self.actors.len()).map(|a| if a == *actor { text.clone() } else { "-".to_string() }));
            table.add_row(row);
        }
        table.to_string()
    }
}
