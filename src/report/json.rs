//! The JSON report: the [`crate::correlate::Analysis`] as serde writes it, `schema` first.
//! The layout is documented in the README ("The report").
//!
//! Stage: renderer.

use super::Renderer;
use crate::correlate::Analysis;
use std::io::{self, Write};

pub struct JsonReport;

impl Renderer for JsonReport {
    fn render(&self, analysis: &Analysis, out: &mut dyn Write) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, analysis).map_err(io::Error::other)?;
        writeln!(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_comes_first_and_findings_carry_everything() {
        let a = super::super::tests::hostile_analysis();
        let mut buf = Vec::new();
        JsonReport.render(&a, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.starts_with("{\n  \"schema\": 1,"), "{}", &text[..40]);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let f = &v["findings"][0];
        assert_eq!(f["kind"], "ruby_retention");
        assert_eq!(f["confidence"], "medium");
        assert_eq!(f["class"], "Evil<script>document.title='pwned'</script>");
        assert_eq!(f["fingerprint"].as_str().unwrap().len(), 16);
        assert!(
            f["evidence"][0]["text"]
                .as_str()
                .unwrap()
                .contains("1,000 → 5,000 → 9,000")
        );
        assert!(f["suggestion"]["text"].is_string());
        assert_eq!(v["verdict"], "leak");
        assert_eq!(
            v["timeline"]["classes"][0]["counts"],
            serde_json::json!([1000, 5000, 9000])
        );
    }
}
