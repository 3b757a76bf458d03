//! JSON lines on stdout, one event per line, for machines; the summary table goes to stderr.

use std::io::Write;

use engine::event::Event;

use super::{Reporter, Summary};

pub struct JsonReporter<W: Write> {
    out: W,
}

impl<W: Write> JsonReporter<W> {
    pub fn new(out: W) -> Self {
        JsonReporter { out }
    }
}

impl<W: Write> Reporter for JsonReporter<W> {
    fn event(&mut self, event: &Event) {
        if serde_json::to_writer(&mut self.out, event).is_ok() {
            let _ = self.out.write_all(b"\n");
        }
    }

    fn finish(&mut self, summary: &Summary) {
        let _ = self.out.flush();
        eprint!("{}", summary.render());
    }
}
