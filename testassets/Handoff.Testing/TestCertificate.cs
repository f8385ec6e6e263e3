using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Handoff.Testing;

/// <summary>Self-signed certificates for HTTPS endpoints in tests.</summary>
public static class TestCertificate
{
    public const string Password = "handoff-test";

    /// <summary>Writes a self-signed certificate for localhost and 127.0.0.1, with its key, as a
    /// PKCS#12 file protected by <see cref="Password"/>; returns its SHA-256 thumbprint, which a
    /// client compares to tell two certificates apart.</summary>
    public static string WritePfx(string path, string subject = "CN=localhost")
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(subject, key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddDnsName("localhost");
        names.AddIpAddress(System.Net.IPAddress.Loopback);
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], critical: false));
        using var certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(30));
        string temporary = path + ".tmp";
        File.WriteAllBytes(temporary, certificate.Export(X509ContentType.Pfx, Password));
        File.Move(temporary, path, overwrite: true); // replaced in one step, as deploy tools do
        return Convert.ToHexString(SHA256.HashData(certificate.RawData));
    }

    /// <summary>Writes a certificate as <c>server.pfx</c> in <paramref name="directory"/>
    /// (see <see cref="WritePfx"/>); returns its path.</summary>
    public static string WritePfxIn(string directory)
    {
        string pfx = Path.Combine(directory, "server.pfx");
        WritePfx(pfx);
        return pfx;
    }

    /// <summary>Kestrel configuration for an HTTPS endpoint on 127.0.0.1 (dynamic port) with
    /// the certificate file at <paramref name="pfx"/>.</summary>
    public static string[] HttpsEndpointArguments(string pfx, string protocols = "Http1AndHttp2") =>
    [
        "--Kestrel:Endpoints:Https:Url=https://127.0.0.1:0",
        "--Kestrel:Endpoints:Https:Certificate:Path=" + pfx,
        "--Kestrel:Endpoints:Https:Certificate:Password=" + Password,
        "--Kestrel:Endpoints:Https:Protocols=" + protocols,
    ];
}
