//! A spoke's own summary, rendered as Markdown that cannot run or load anything: raw HTML is
//! dropped, links with dangerous schemes (`javascript:`, `data:`, ...) lose their target
//! (CommonMark's safe mode), and images become plain links, so a summary never makes the
//! browser fetch from elsewhere. The page's Content-Security-Policy is the second wall.

use comrak::nodes::NodeValue;
use comrak::{Arena, Options};

/// Longest summary rendered, in bytes (the rest is cut at a character boundary).
pub const MAX_SUMMARY: usize = 16 * 1024;

/// Safe HTML for a spoke summary.
pub fn render(summary: &str) -> String {
    let mut cut = summary.len().min(MAX_SUMMARY);
    while !summary.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut options = Options::default();
    options.render.r#unsafe = false;
    options.extension.table = true;
    options.extension.strikethrough = true;
    options.extension.autolink = false;
    let arena = Arena::new();
    let root = comrak::parse_document(&arena, &summary[..cut], &options);
    for node in root.descendants() {
        let mut ast = node.data.borrow_mut();
        let value = std::mem::replace(&mut ast.value, NodeValue::Document);
        ast.value = match value {
            NodeValue::Image(link) => NodeValue::Link(link),
            // Raw HTML is dropped outright (not even an "omitted" comment).
            NodeValue::HtmlInline(_) => NodeValue::Text(String::new().into()),
            NodeValue::HtmlBlock(_) => NodeValue::Paragraph,
            other => other,
        };
    }
    let mut out = String::new();
    if comrak::format_html(root, &options, &mut out).is_err() {
        return String::new();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn markdown_renders() {
        let html = render("**done**: 3 files\n\n- a\n- b");
        assert!(html.contains("<strong>done</strong>"), "{html}");
        assert!(html.contains("<li>a</li>"), "{html}");
    }

    #[test]
    fn raw_html_scripts_and_handlers_are_gone() {
        let html = render(
            "<script>window.__pwned = 1</script>\n\nok <img src=x onerror=\"window.__pwned=2\"> \
             <b onclick=alert(1)>b</b>\n\n<div><iframe src=//evil.example></iframe></div>",
        );
        for bad in [
            "<script", "<img", "onerror", "onclick", "<iframe", "<div", "<b",
        ] {
            assert!(!html.contains(bad), "{bad} in {html}");
        }
        assert!(html.contains("ok"), "{html}");
    }

    #[test]
    fn dangerous_links_lose_their_target_and_images_load_nothing() {
        let html = render(
            "[click](javascript:alert(1)) [d](data:text/html,x) ![i](https://evil.example/y.png) \
             [fine](https://github.com/acme/x)",
        );
        assert!(!html.contains("javascript:"), "{html}");
        assert!(!html.contains("data:text"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        // The image became a link a person may choose to follow.
        assert!(
            html.contains("href=\"https://evil.example/y.png\""),
            "{html}"
        );
        assert!(
            html.contains("href=\"https://github.com/acme/x\""),
            "{html}"
        );
    }

    #[test]
    fn long_summaries_are_cut_on_a_character_boundary() {
        let s = "é".repeat(super::MAX_SUMMARY);
        let html = render(&s);
        assert!(html.len() < s.len());
    }
}
