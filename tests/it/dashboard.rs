//! A signed-in dashboard client: a cookie jar, the session's CSRF token, form posts.

use reqwest::redirect::Policy;

pub struct Dashboard {
    pub http: reqwest::Client,
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub base: String,
    pub csrf: String,
}

/// The value of the first `<input type="hidden" name="csrf" value="...">` in a page.
pub fn csrf_of(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    Some(html[at..].split('"').next()?.to_owned())
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// The sign-in form's token and the client holding its cookie.
pub async fn login_form(base: &str) -> (reqwest::Client, String) {
    let http = client();
    let page = http
        .get(format!("{base}/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = csrf_of(&page).expect("the sign-in form has a CSRF token");
    (http, csrf)
}

impl Dashboard {
    /// Signs in through the form; panics unless it succeeds.
    pub async fn sign_in(base: &str, username: &str, password: &str) -> Dashboard {
        Self::try_sign_in(base, username, password, None)
            .await
            .unwrap_or_else(|(s, body)| panic!("sign-in failed: {s} {body}"))
    }

    pub async fn try_sign_in(
        base: &str,
        username: &str,
        password: &str,
        code: Option<&str>,
    ) -> Result<Dashboard, (u16, String)> {
        let (http, csrf) = login_form(base).await;
        let mut form = vec![
            ("csrf", csrf.as_str()),
            ("username", username),
            ("password", password),
        ];
        if let Some(code) = code {
            form.push(("code", code));
        }
        let r = http
            .post(format!("{base}/login"))
            .form(&form)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        if status != 303 {
            return Err((status, r.text().await.unwrap_or_default()));
        }
        let home = http
            .get(format!("{base}/"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let csrf = csrf_of(&home).expect("signed-in pages carry the session's CSRF token");
        Ok(Dashboard {
            http,
            base: base.to_owned(),
            csrf,
        })
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}/{}", self.base, path.trim_start_matches('/')))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Posts a form with the session's CSRF token added.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> (u16, String) {
        let mut form: Vec<(&str, &str)> = vec![("csrf", self.csrf.as_str())];
        form.extend_from_slice(fields);
        self.post_raw(path, &form).await
    }

    /// Posts exactly the given fields (no CSRF token unless given).
    pub async fn post_raw(&self, path: &str, fields: &[(&str, &str)]) -> (u16, String) {
        let r = self
            .http
            .post(format!("{}/{}", self.base, path.trim_start_matches('/')))
            .form(fields)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}
