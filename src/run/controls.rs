//! The buttons under a job's messages: [Tail] [Kill] under its acknowledgement, [Tail] [Rerun]
//! under its completion. A button's id names its action and job (`k:7f3a9c`): short enough
//! for every platform (Telegram's `callback_data`: 64 bytes), and nothing an adapter reads.

use execrelay_channel::{Button, MAX_BUTTON_ID_BYTES};

/// What a button does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    Tail,
    Kill,
    Rerun,
}

impl Control {
    fn code(self) -> &'static str {
        match self {
            Control::Tail => "t",
            Control::Kill => "k",
            Control::Rerun => "r",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Control::Tail => "Tail",
            Control::Kill => "Kill",
            Control::Rerun => "Rerun",
        }
    }

    pub fn button(self, job_id: &str) -> Button {
        let id = format!("{}:{job_id}", self.code());
        debug_assert!(id.len() <= MAX_BUTTON_ID_BYTES);
        Button {
            id,
            label: self.label().into(),
        }
    }
}

/// Under a running job's acknowledgement.
pub fn ack_buttons(job_id: &str) -> Vec<Button> {
    vec![Control::Tail.button(job_id), Control::Kill.button(job_id)]
}

/// Under a job's completion.
pub fn completion_buttons(job_id: &str) -> Vec<Button> {
    vec![Control::Tail.button(job_id), Control::Rerun.button(job_id)]
}

/// The control and job a pressed button's id names; `None` for one this relay never made.
pub fn parse(id: &str) -> Option<(Control, &str)> {
    let (code, job) = id.split_once(':')?;
    let control = match code {
        "t" => Control::Tail,
        "k" => Control::Kill,
        "r" => Control::Rerun,
        _ => return None,
    };
    let is_job_id =
        !job.is_empty() && job.len() <= 16 && job.bytes().all(|b| b.is_ascii_hexdigit());
    is_job_id.then_some((control, job))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_button_names_its_control_and_job_and_fits_every_platform() {
        for control in [Control::Tail, Control::Kill, Control::Rerun] {
            let button = control.button("7f3a9c");
            assert!(button.id.len() <= MAX_BUTTON_ID_BYTES);
            assert_eq!(parse(&button.id), Some((control, "7f3a9c")));
        }
        assert_eq!(ack_buttons("0a")[1].label, "Kill");
        assert_eq!(completion_buttons("0a")[1].label, "Rerun");
    }

    #[test]
    fn ids_the_relay_never_made_are_refused() {
        for id in [
            "",
            "k",
            "k:",
            "x:7f3a9c",
            "k:7f3a9c; rm -rf /",
            "k:../../etc",
            "kill:7f3a9c",
        ] {
            assert_eq!(parse(id), None, "{id}");
        }
    }
}
