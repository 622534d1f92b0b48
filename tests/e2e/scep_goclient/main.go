// Command scep_goclient is an independent SCEP client for Pomona's end-to-end tests.
//
// It uses micromdm/scep (Debian's golang-github-micromdm-scep-dev) and go.mozilla.org/pkcs7 to
// fetch the CA certificate, send a PKCSReq with a challenge, and print the issued certificate.
// Exit codes: 0 issued (PEM on stdout), 2 refused (failInfo on stdout), 1 any other error.
package main

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"time"

	"github.com/micromdm/scep/v2/cryptoutil/x509util"
	"github.com/micromdm/scep/v2/scep"
	"go.mozilla.org/pkcs7"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func main() {
	url := flag.String("url", "", "SCEP endpoint URL")
	challenge := flag.String("challenge", "", "challenge password")
	cn := flag.String("cn", "go-scep-client", "subject common name")
	enc := flag.String("enc", "aes128", "content encryption: des, aes128, aes256")
	digest := flag.String("digest", "sha1", "signature digest: sha1, sha256")
	flag.Parse()

	switch *enc {
	case "des":
		pkcs7.ContentEncryptionAlgorithm = pkcs7.EncryptionAlgorithmDESCBC
	case "aes128":
		pkcs7.ContentEncryptionAlgorithm = pkcs7.EncryptionAlgorithmAES128CBC
	case "aes256":
		pkcs7.ContentEncryptionAlgorithm = pkcs7.EncryptionAlgorithmAES256CBC
	default:
		fail("unknown -enc %s", *enc)
	}
	_ = digest // micromdm/scep v2 always signs PKCSReq with SHA-1

	resp, err := http.Get(*url + "?operation=GetCACert")
	if err != nil {
		fail("GetCACert: %v", err)
	}
	caDER, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	caCerts, err := x509.ParseCertificates(caDER)
	if err != nil || len(caCerts) == 0 {
		caCerts, err = scep.CACerts(caDER)
		if err != nil {
			fail("parse CA cert: %v", err)
		}
	}

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		fail("key: %v", err)
	}
	subject := pkix.Name{CommonName: *cn, Organization: []string{"Pomona e2e"}}
	tmpl := &x509util.CertificateRequest{
		CertificateRequest: x509.CertificateRequest{Subject: subject, SignatureAlgorithm: x509.SHA256WithRSA},
		ChallengePassword:  *challenge,
	}
	csrDER, err := x509util.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		fail("csr: %v", err)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		fail("parse csr: %v", err)
	}

	selfTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      subject,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
	}
	selfDER, err := x509.CreateCertificate(rand.Reader, selfTmpl, selfTmpl, &key.PublicKey, key)
	if err != nil {
		fail("self-signed: %v", err)
	}
	selfCert, _ := x509.ParseCertificate(selfDER)

	msg, err := scep.NewCSRRequest(csr, &scep.PKIMessage{
		MessageType: scep.PKCSReq,
		Recipients:  caCerts[:1],
		SignerKey:   key,
		SignerCert:  selfCert,
	})
	if err != nil {
		fail("PKCSReq: %v", err)
	}

	resp, err = http.Post(*url+"?operation=PKIOperation", "application/x-pki-message", bytes.NewReader(msg.Raw))
	if err != nil {
		fail("PKIOperation: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		fail("PKIOperation HTTP %d: %s", resp.StatusCode, body)
	}

	rep, err := scep.ParsePKIMessage(body, scep.WithCACerts(caCerts))
	if err != nil {
		fail("parse CertRep: %v", err)
	}
	if string(rep.RecipientNonce) != string(msg.SenderNonce) {
		fail("recipientNonce does not echo senderNonce")
	}
	if rep.TransactionID != msg.TransactionID {
		fail("transactionID mismatch")
	}
	switch rep.PKIStatus {
	case scep.SUCCESS:
		if err := rep.DecryptPKIEnvelope(selfCert, key); err != nil {
			fail("decrypt CertRep: %v", err)
		}
		pem.Encode(os.Stdout, &pem.Block{Type: "CERTIFICATE", Bytes: rep.CertRepMessage.Certificate.Raw})
	case scep.FAILURE:
		fmt.Printf("FAILURE failInfo=%s\n", string(rep.FailInfo))
		os.Exit(2)
	default:
		fail("unexpected pkiStatus %s", rep.PKIStatus)
	}
}
