//! The CLI's output read back: the response's data as JSON, a secret
//! answer kept whole in zeroizing memory, or the API error the CLI printed
//! as a [`NodeError`].

use super::ExecOutput;
use crate::ops::node::NodeError;
use crate::ops::secret::SecretAnswer;
use serde_json::Value;

/// Turns the CLI's output into the response's data, or its error into a [`NodeError`].
pub fn interpret(output: ExecOutput) -> Result<Value, NodeError> {
    if output.exit_code == 0 {
        let text = String::from_utf8_lossy(&output.stdout);
        let text = text.trim();
        if text.is_empty() || !text.starts_with('{') {
            return Ok(Value::Null);
        }
        let value: Value = serde_json::from_str(text)
            .map_err(|e| NodeError::Malformed(format!("CLI output is not JSON: {e}")))?;
        return Ok(match value.get("data") {
            Some(data) if !data.is_null() => data.clone(),
            _ => value,
        });
    }
    Err(parse_cli_error(&output.stderr, output.exit_code))
}

/// The CLI's output kept whole in zeroizing memory when it succeeded (an
/// answer that carries secrets), or its error as a [`NodeError`].
pub fn interpret_secret(output: ExecOutput) -> Result<SecretAnswer, NodeError> {
    if output.exit_code == 0 {
        return Ok(SecretAnswer::new(output.stdout));
    }
    Err(parse_cli_error(&output.stderr, output.exit_code))
}

/// Parses `Code: 400. Errors:\n\n* message` as the Vault CLI prints API errors.
pub fn parse_cli_error(stderr: &str, exit_code: i32) -> NodeError {
    if let Some(rest) = stderr.split("Code: ").nth(1) {
        let status: u16 = rest
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or(0);
        let errors: Vec<String> = rest
            .lines()
            .filter_map(|l| l.trim().strip_prefix("* "))
            .map(str::to_owned)
            .collect();
        return NodeError::Api { status, errors };
    }
    if stderr.contains("No value found at") {
        return NodeError::Api {
            status: 404,
            errors: vec![stderr.trim().to_owned()],
        };
    }
    let first = stderr
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output");
    NodeError::Unreachable(format!("the CLI exited with {exit_code}: {first}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_api_errors_become_status_and_messages() {
        let stderr = "Error writing data to sys/unseal: Error making API request.\n\nURL: PUT http://127.0.0.1:8200/v1/sys/unseal\nCode: 400. Errors:\n\n* 'key' must be a valid hex or base64 string\n";
        match parse_cli_error(stderr, 2) {
            NodeError::Api { status, errors } => {
                assert_eq!(status, 400);
                assert_eq!(
                    errors,
                    vec!["'key' must be a valid hex or base64 string".to_owned()]
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn output_is_unwrapped_from_data() {
        let out = ExecOutput {
            exit_code: 0,
            stdout: br#"{"data":{"sealed":true},"warnings":null}"#.to_vec(),
            stderr: String::new(),
        };
        assert_eq!(interpret(out).unwrap(), serde_json::json!({"sealed": true}));
        let empty = ExecOutput {
            exit_code: 0,
            stdout: b"Success! Data deleted".to_vec(),
            stderr: String::new(),
        };
        assert_eq!(interpret(empty).unwrap(), Value::Null);
    }
}
