//! What travels inside FastCGI: CGI/1.1 variables going in, a CGI response coming out.

use super::FcgiError;

/// A name-value pair, e.g. a CGI variable. Bytes, not strings: CGI variables carry raw
/// HTTP bytes.
pub type Param = (Vec<u8>, Vec<u8>);

/// One request for the Responder role: CGI variables (`FCGI_PARAMS`) and a body (`FCGI_STDIN`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// CGI variables, sent in this order.
    pub params: Vec<Param>,
    pub stdin: Vec<u8>,
}

impl Request {
    /// A request with the usual CGI variables for running `script_filename`.
    ///
    /// `uri_path` is the path the script is reached by (no query): it becomes
    /// `SCRIPT_NAME` and `DOCUMENT_URI`, and with `?query` appended, `REQUEST_URI`.
    /// php-fpm matches `ping.path` and `pm.status_path` against it.
    pub fn new(method: &str, script_filename: &str, uri_path: &str, query: &str) -> Self {
        let request_uri = if query.is_empty() {
            uri_path.to_owned()
        } else {
            format!("{uri_path}?{query}")
        };
        let mut req = Self::default();
        for (name, value) in [
            ("GATEWAY_INTERFACE", "CGI/1.1"),
            ("SERVER_SOFTWARE", "lodge"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("REQUEST_METHOD", method),
            ("SCRIPT_FILENAME", script_filename),
            ("SCRIPT_NAME", uri_path),
            ("DOCUMENT_URI", uri_path),
            ("REQUEST_URI", &request_uri),
            ("QUERY_STRING", query),
            ("REMOTE_ADDR", "127.0.0.1"),
            ("SERVER_ADDR", "127.0.0.1"),
            ("SERVER_NAME", "localhost"),
            ("SERVER_PORT", "80"),
        ] {
            req.set_param(name, value);
        }
        req
    }

    /// `GET uri_path?query`, run by `script_filename`.
    pub fn get(script_filename: &str, uri_path: &str, query: &str) -> Self {
        Self::new("GET", script_filename, uri_path, query)
    }

    /// `POST uri_path` with `body`, run by `script_filename`.
    pub fn post(script_filename: &str, uri_path: &str, content_type: &str, body: Vec<u8>) -> Self {
        Self::new("POST", script_filename, uri_path, "").with_body(content_type, body)
    }

    /// Sets the body and the variables that describe it.
    pub fn with_body(mut self, content_type: &str, body: Vec<u8>) -> Self {
        self.set_param("CONTENT_LENGTH", body.len().to_string());
        self.set_param("CONTENT_TYPE", content_type);
        self.stdin = body;
        self
    }

    /// Sets a variable, e.g. `HTTP_HOST` or `DOCUMENT_ROOT`, replacing an earlier value.
    pub fn param(mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Self {
        self.set_param(name, value);
        self
    }

    pub fn set_param(&mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        let (name, value) = (name.as_ref(), value.as_ref().to_vec());
        // Replace rather than append: a server keeps whichever duplicate it likes.
        match self.params.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.params.push((name.to_vec(), value)),
        }
    }

    pub fn param_value(&self, name: &str) -> Option<&[u8]> {
        self.params
            .iter()
            .find(|(n, _)| n == name.as_bytes())
            .map(|(_, v)| &v[..])
    }
}

/// A complete response: the CGI header block of `FCGI_STDOUT` parsed, the rest as body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// From the `Status:` header; 302 for a bare `Location:`; otherwise 200 (RFC 3875).
    pub status: u16,
    /// In order, without `Status:`. Non-UTF-8 bytes are replaced (lossy).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Everything on `FCGI_STDERR` (php-fpm: "Primary script unknown", `error_log()` text),
    /// up to the client's stderr limit.
    pub stderr: Vec<u8>,
    /// `appStatus` from `FCGI_END_REQUEST`.
    pub app_status: u32,
}

impl Response {
    /// Splits a CGI response (header lines ended by `\r\n` or `\n`, a blank line, the body).
    pub fn from_cgi(
        mut stdout: Vec<u8>,
        stderr: Vec<u8>,
        app_status: u32,
    ) -> Result<Self, FcgiError> {
        let mut status = None;
        let mut headers = Vec::new();
        let mut pos = 0;
        let body_start = loop {
            let Some(nl) = stdout[pos..].iter().position(|&b| b == b'\n') else {
                return Err(FcgiError::Protocol(if stdout.is_empty() {
                    "empty response from the FastCGI application".into()
                } else {
                    "CGI header block has no end (no blank line)".into()
                }));
            };
            let line = &stdout[pos..pos + nl];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let next = pos + nl + 1;
            if line.is_empty() {
                break next;
            }
            let text = String::from_utf8_lossy(line);
            let Some((name, value)) = text.split_once(':') else {
                return Err(FcgiError::Protocol(format!(
                    "malformed CGI header line {text:?}"
                )));
            };
            let (name, value) = (name.trim(), value.trim());
            if name.is_empty() {
                return Err(FcgiError::Protocol(format!(
                    "malformed CGI header line {text:?}"
                )));
            }
            if name.eq_ignore_ascii_case("status") {
                status = Some(parse_status(value)?);
            } else {
                headers.push((name.to_owned(), value.to_owned()));
            }
            pos = next;
        };
        let status = status.unwrap_or_else(|| {
            let redirect = headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("location"));
            if redirect {
                302
            } else {
                200
            }
        });
        stdout.drain(..body_start);
        Ok(Self {
            status,
            headers,
            body: stdout,
            stderr,
            app_status,
        })
    }

    /// The first header called `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `Status: 404 Not Found` → 404. The reason phrase is optional and ignored.
fn parse_status(value: &str) -> Result<u16, FcgiError> {
    let code = value.split_ascii_whitespace().next().unwrap_or("");
    match code.parse::<u16>() {
        Ok(n) if code.len() == 3 && (100..=999).contains(&n) => Ok(n),
        _ => Err(FcgiError::Protocol(format!(
            "bad CGI Status header {value:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(stdout: &[u8]) -> Result<Response, FcgiError> {
        Response::from_cgi(stdout.to_vec(), Vec::new(), 0)
    }

    #[test]
    fn get_fills_the_cgi_variables() {
        let r = Request::get("/srv/t/index.php", "/index.php", "a=1");
        let p = |n| std::str::from_utf8(r.param_value(n).unwrap()).unwrap();
        assert_eq!(p("REQUEST_METHOD"), "GET");
        assert_eq!(p("SCRIPT_FILENAME"), "/srv/t/index.php");
        assert_eq!(p("SCRIPT_NAME"), "/index.php");
        assert_eq!(p("DOCUMENT_URI"), "/index.php");
        assert_eq!(p("REQUEST_URI"), "/index.php?a=1");
        assert_eq!(p("QUERY_STRING"), "a=1");
        assert_eq!(p("SERVER_SOFTWARE"), "lodge");
        assert_eq!(p("GATEWAY_INTERFACE"), "CGI/1.1");
        assert_eq!(p("REMOTE_ADDR"), "127.0.0.1");
        assert!(r.param_value("CONTENT_LENGTH").is_none());
        assert!(r.stdin.is_empty());

        let r = Request::get("/x", "/x", "");
        assert_eq!(r.param_value("REQUEST_URI"), Some(&b"/x"[..]));
    }

    #[test]
    fn post_describes_its_body() {
        let r = Request::post("/s.php", "/s.php", "text/plain", b"hello".to_vec());
        assert_eq!(r.param_value("REQUEST_METHOD"), Some(&b"POST"[..]));
        assert_eq!(r.param_value("CONTENT_LENGTH"), Some(&b"5"[..]));
        assert_eq!(r.param_value("CONTENT_TYPE"), Some(&b"text/plain"[..]));
        assert_eq!(r.stdin, b"hello");
    }

    #[test]
    fn param_replaces() {
        let r = Request::get("/a", "/a", "").param("SERVER_NAME", "example.org");
        let n = r.params.iter().filter(|(n, _)| n == b"SERVER_NAME").count();
        assert_eq!(n, 1);
        assert_eq!(r.param_value("SERVER_NAME"), Some(&b"example.org"[..]));
    }

    #[test]
    fn status_header_and_crlf() {
        let r = parse(b"Status: 404 Not Found\r\nContent-type: text/html\r\n\r\nFile not found.\n")
            .unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.headers, vec![("Content-type".into(), "text/html".into())]);
        assert_eq!(r.header("content-TYPE"), Some("text/html"));
        assert_eq!(r.body, b"File not found.\n");
    }

    #[test]
    fn bare_newlines_and_default_status() {
        let r = parse(b"X-A: 1\nX-B:2\n\nbody\r\n\r\nmore").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.headers.len(), 2);
        assert_eq!(r.header("x-b"), Some("2"));
        assert_eq!(
            r.body, b"body\r\n\r\nmore",
            "only the first blank line ends the headers"
        );
    }

    #[test]
    fn status_without_reason_and_lowercase() {
        assert_eq!(parse(b"status: 201\r\n\r\n").unwrap().status, 201);
    }

    #[test]
    fn location_alone_is_a_redirect() {
        let r = parse(b"Location: /next\r\n\r\n").unwrap();
        assert_eq!(r.status, 302);
        let r = parse(b"Status: 301 Moved\r\nLocation: /next\r\n\r\n").unwrap();
        assert_eq!(r.status, 301);
    }

    #[test]
    fn empty_body_is_fine() {
        let r = parse(b"Content-type: text/plain\r\n\r\n").unwrap();
        assert!(r.body.is_empty());
        let r = parse(b"\r\n").unwrap();
        assert!(r.headers.is_empty());
    }

    #[test]
    fn malformed_responses_are_errors() {
        for bad in [
            &b""[..],
            b"Content-type: text/html\r\n",
            b"no colon here\r\n\r\n",
            b": empty name\r\n\r\n",
            b"Status: abc\r\n\r\n",
            b"Status: 42\r\n\r\n",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(matches!(err, FcgiError::Protocol(_)), "{bad:?}: {err}");
        }
    }
}
