//! API errors: a status and a lowercase message, answered as `{"error": "..."}`.

use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use crate::registry::RegistryError;
use lathe_store::StoreError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Seconds for a `Retry-After` header (a 503 past a cap).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same error, asking the client to retry after `seconds`.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    pub fn into_response(self) -> Response {
        let body = warp::reply::json(&serde_json::json!({ "error": self.message }));
        let mut response = warp::reply::with_status(body, self.status).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(
                warp::http::header::RETRY_AFTER,
                warp::http::HeaderValue::from(seconds),
            );
        }
        response
    }
}

impl From<RegistryError> for ApiError {
    fn from(error: RegistryError) -> Self {
        let status = match &error {
            RegistryError::Store(StoreError::CasMismatch { .. }) => StatusCode::CONFLICT,
            RegistryError::Store(StoreError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            RegistryError::Store(StoreError::Forbidden(_)) => StatusCode::FORBIDDEN,
            RegistryError::Store(StoreError::Unavailable(_)) | RegistryError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            RegistryError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, error.to_string())
    }
}
