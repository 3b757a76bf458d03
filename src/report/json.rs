//! JSON lines on stdout, one event per line, for machines; the summary table goes to stderr.

use std::io::Write;

use engine::event::Event;

use super::{print_not_started, Reporter, Summary};

pub struct JsonReporter<W: Write> {
    out: W,
}

impl<W: Write> JsonReporter<W> {
    pub fn new(out: W) -> Self {
        JsonReporter { out }
    }
}

impl<W: Write + Send> Reporter for JsonReporter<W> {
    fn event(&mut self, event: &Event) {
        if serde_json::to_writer(&mut self.out, event).is_ok() {
            let _ = self.out.write_all(b"\n");
        }
    }

    fn finish(&mut self, summary: &Summary) {
        let _ = self.out.flush();
        eprint!("{}", summary.render());
    }

    fn notice(&mut self, text: &str) {
        eprintln!("{text}");
    }

    fn not_started(&mut self, summary: &Summary, errors: &[String]) {
        print_not_started(summary, errors);
    }
}
