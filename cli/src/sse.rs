//! A Server-Sent Events parser: feed it the stream's lines, get one event per blank-line-terminated
//! block.

/// One event of the stream; `data` joins its `data:` lines with `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    pub(crate) event: Option<String>,
    pub(crate) id: Option<String>,
    pub(crate) data: String,
}

/// Accumulates the fields of the event being received.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    event: Option<String>,
    id: Option<String>,
    data: Vec<String>,
}

impl SseParser {
    /// Feeds one line (with or without its line ending); returns the event a blank line completes.
    /// Comments (`:` lines, used as keep-alives) and events without data are skipped, as the SSE
    /// specification says.
    pub(crate) fn push_line(&mut self, line: &str) -> Option<SseEvent> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(':') {
            return None;
        }
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match name {
            "data" => self.data.push(value.to_string()),
            "event" => self.event = Some(value.to_string()),
            "id" => self.id = Some(value.to_string()),
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        let id = self.id.take();
        if self.data.is_empty() {
            return None;
        }
        let data = std::mem::take(&mut self.data).join("\n");
        Some(SseEvent { event, id, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(text: &str) -> Vec<SseEvent> {
        let mut parser = SseParser::default();
        text.split_inclusive('\n')
            .filter_map(|l| parser.push_line(l))
            .collect()
    }

    #[test]
    fn data_lines_make_events_and_comments_are_skipped() {
        let events = parse_all(
            ":keep-alive\n\ndata: {\"a\":1}\n\nevent: change\nid: 7\ndata:{\"b\":2}\r\n\r\n",
        );
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].data, "{\"a\":1}");
        assert_eq!(
            events[1],
            SseEvent {
                event: Some("change".into()),
                id: Some("7".into()),
                data: "{\"b\":2}".into()
            }
        );
    }

    #[test]
    fn multi_line_data_is_joined_and_an_unfinished_event_is_dropped() {
        let events = parse_all("data: a\ndata: b\n\ndata: unfinished");
        assert_eq!(
            events.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
            ["a\nb"]
        );
    }
}
