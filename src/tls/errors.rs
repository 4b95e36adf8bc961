//! The mapping of rustls errors to [`ConnError`]: pure, so it is tested
//! without a connection.

use rustls::{CertificateError, Error};

use crate::connection::{CertProblem, ConnError};

/// Why a certificate was refused.
fn cert_problem(e: &CertificateError) -> CertProblem {
    match e {
        CertificateError::UnknownIssuer => CertProblem::UnknownIssuer,
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => CertProblem::Expired,
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => CertProblem::NotYetValid,
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => CertProblem::WrongName,
        CertificateError::Revoked => CertProblem::Revoked,
        _ => CertProblem::Other,
    }
}

/// The connection error of a rustls error; `handshaking` tells a failed
/// handshake from a bad record in the data phase.
pub(crate) fn conn_error(e: &Error, handshaking: bool) -> ConnError {
    match e {
        Error::InvalidCertificate(c) => ConnError::TlsBadCert(cert_problem(c)),
        Error::AlertReceived(alert) => ConnError::TlsAlert(u8::from(*alert)),
        _ if handshaking => ConnError::TlsHandshake,
        _ => ConnError::TlsProtocol,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::AlertDescription;

    #[test]
    fn certificate_refusals_keep_their_reason() {
        let cases = [
            (CertificateError::UnknownIssuer, CertProblem::UnknownIssuer),
            (CertificateError::Expired, CertProblem::Expired),
            (CertificateError::NotValidYet, CertProblem::NotYetValid),
            (CertificateError::NotValidForName, CertProblem::WrongName),
            (CertificateError::Revoked, CertProblem::Revoked),
            (CertificateError::BadSignature, CertProblem::Other),
        ];
        for (e, want) in cases {
            assert_eq!(conn_error(&Error::InvalidCertificate(e.clone()), true), ConnError::TlsBadCert(want), "{e:?}");
        }
    }

    #[test]
    fn alerts_and_phases() {
        let e = Error::AlertReceived(AlertDescription::UnknownCA);
        assert_eq!(conn_error(&e, true), ConnError::TlsAlert(48));
        assert_eq!(conn_error(&Error::DecryptError, true), ConnError::TlsHandshake);
        assert_eq!(conn_error(&Error::DecryptError, false), ConnError::TlsProtocol);
    }
}
