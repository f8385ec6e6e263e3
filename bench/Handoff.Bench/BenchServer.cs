using Handoff.Testing;

namespace Handoff.Bench;

/// <summary>How long an action took, as seen from outside the server.</summary>
/// <param name="At">When the signal was sent.</param>
/// <param name="ToReadyMs">Signal to new process accepting (restart: old stopped and new accepting).</param>
/// <param name="ToOldGoneMs">New process ready to old process gone (restart: 0).</param>
/// <param name="Succeeded">Whether a new process took over.</param>
internal sealed record ActionTiming(DateTime At, double ToReadyMs, double ToOldGoneMs, bool Succeeded);

/// <summary>A server under benchmark: one of plain Kestrel, Handoff, nginx.</summary>
internal abstract class BenchServer : IAsyncDisposable
{
    protected BenchServer(string directory, int port, bool http2, bool tls = false)
    {
        Directory = directory;
        Port = port;
        Http2 = http2;
        Tls = tls;
    }

    public abstract string Name { get; }

    /// <summary>"upgrade" or "restart": what the action of this server is.</summary>
    public abstract string ActionName { get; }

    public string Directory { get; }

    public int Port { get; }

    public bool Http2 { get; }

    /// <summary>Serves HTTPS (HTTP/1.1 and HTTP/2 by ALPN) with a self-signed certificate.</summary>
    public bool Tls { get; }

    /// <summary>The process that serves requests now (nginx: its worker).</summary>
    public abstract int ServingPid { get; }

    public abstract Task StartAsync();

    public abstract Task<ActionTiming> ActAsync();

    /// <summary>Bytes the serving process allocates per keep-alive request, measured over a fixed
    /// number of requests on one connection; null where the server cannot say (not .NET).</summary>
    public virtual Task<double?> AllocatedBytesPerRequestAsync() => Task.FromResult<double?>(null);

    public abstract ValueTask DisposeAsync();

    /// <summary>Writes a self-signed certificate for 127.0.0.1 into the server's directory, as
    /// PKCS#12 (server.pfx, for Kestrel) and PEM (server.crt and server.key, for nginx).</summary>
    protected string WriteCertificate()
    {
        string pfx = TestCertificate.WritePfxIn(Directory);
        using var certificate = System.Security.Cryptography.X509Certificates.X509CertificateLoader.LoadPkcs12FromFile(pfx, TestCertificate.Password, System.Security.Cryptography.X509Certificates.X509KeyStorageFlags.Exportable);
        using var key = System.Security.Cryptography.X509Certificates.ECDsaCertificateExtensions.GetECDsaPrivateKey(certificate)!;
        File.WriteAllText(Path.Combine(Directory, "server.crt"), certificate.ExportCertificatePem());
        File.WriteAllText(Path.Combine(Directory, "server.key"), key.ExportPkcs8PrivateKeyPem());
        return pfx;
    }

    protected static double Since(DateTime start) => (DateTime.UtcNow - start).TotalMilliseconds;
}
