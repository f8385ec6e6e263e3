using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Handoff.Testing;

/// <summary>
/// A reverse proxy in front of a server on loopback, as users run one: nginx with a keep-alive
/// pool to its upstream (<c>keepalive</c>, HTTP/1.1, no <c>Connection</c> header passed on), or
/// HAProxy (keep-alive to the server by default). Runs in the foreground as this process's
/// child, and is killed on dispose. Both retry a request on another connection only when it
/// is idempotent and the connection failed before any answer: nginx's
/// <c>proxy_next_upstream error</c> (a GET, not a POST), HAProxy's <c>retry-on</c> default
/// (connect failures only).
/// </summary>
public sealed class ReverseProxy : IDisposable
{
    private readonly Process _process;

    private ReverseProxy(Process process, IPEndPoint endPoint, string name)
    {
        _process = process;
        EndPoint = endPoint;
        Name = name;
    }

    /// <summary>Where clients connect.</summary>
    public IPEndPoint EndPoint { get; }

    /// <summary>"nginx" or "haproxy".</summary>
    public string Name { get; }

    /// <summary>Starts <paramref name="name"/> ("nginx" or "haproxy") in
    /// <paramref name="directory"/>, forwarding to <paramref name="backend"/>; returns once it
    /// accepts connections.</summary>
    public static Task<ReverseProxy> StartAsync(string name, string directory, IPEndPoint backend) =>
        StartAsync(name, directory, [backend]);

    /// <summary>The same, balancing round robin across <paramref name="backends"/> (a fleet).</summary>
    public static async Task<ReverseProxy> StartAsync(string name, string directory, IReadOnlyList<IPEndPoint> backends)
    {
        int port = FreePort();
        string config = Path.Combine(directory, name + ".conf");
        string[] command;
        if (name == "nginx")
        {
            Directory.CreateDirectory(Path.Combine(directory, "tmp"));
            await File.WriteAllTextAsync(config, NginxConfiguration(directory, port, backends));
            command = ["/usr/sbin/nginx", "-p", directory, "-c", config, "-g", "daemon off;"];
        }
        else if (name == "haproxy")
        {
            await File.WriteAllTextAsync(config, HaproxyConfiguration(port, backends) + "\n");
            command = ["/usr/sbin/haproxy", "-db", "-f", config];
        }
        else
        {
            throw new ArgumentException($"unknown proxy '{name}': nginx or haproxy", nameof(name));
        }

        var info = new ProcessStartInfo(command[0]) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string argument in command[1..])
        {
            info.ArgumentList.Add(argument);
        }

        var process = Process.Start(info) ?? throw new InvalidOperationException($"{name} did not start");
        var proxy = new ReverseProxy(process, new IPEndPoint(IPAddress.Loopback, port), name);
        try
        {
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
            while (true)
            {
                if (process.HasExited)
                {
                    throw new InvalidOperationException($"{name} exited with {process.ExitCode}: {await process.StandardError.ReadToEndAsync()}");
                }

                using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                try
                {
                    await socket.ConnectAsync(proxy.EndPoint);
                    return proxy;
                }
                catch (SocketException) when (DateTime.UtcNow < deadline)
                {
                    await Task.Delay(20);
                }
            }
        }
        catch
        {
            proxy.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
        }

        _process.WaitForExit();
        _process.Dispose();
    }

    private static string NginxConfiguration(string directory, int port, IReadOnlyList<IPEndPoint> backends) => string.Create(CultureInfo.InvariantCulture, $$"""
        worker_processes 1;
        pid {{directory}}/nginx.pid;
        error_log {{directory}}/error.log warn;
        events { worker_connections 4096; }
        http {
            access_log off;
            {{NginxTempPaths(directory)}}
            client_body_buffer_size 64k;
            upstream backend {
                {{string.Join(" ", backends.Select(b => $"server {b};"))}}
                keepalive 64;
            }
            server {
                listen 127.0.0.1:{{port}};
                location / {
                    proxy_pass http://backend;
                    proxy_http_version 1.1;
                    proxy_set_header Connection "";
                }
            }
        }
        """);

    /// <summary>nginx's temporary directories, all in <paramref name="directory"/>/tmp (the
    /// defaults are under /var/lib/nginx, which a test's nginx must not share).</summary>
    public static string NginxTempPaths(string directory) =>
        string.Join(" ", NginxTempKinds.Select(kind => $"{kind}_temp_path {directory}/tmp;"));

    private static readonly string[] NginxTempKinds = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"];

    private static string HaproxyConfiguration(int port, IReadOnlyList<IPEndPoint> backends) => string.Create(CultureInfo.InvariantCulture, $"""
        global
            maxconn 4096
        defaults
            mode http
            timeout connect 5s
            timeout client 60s
            timeout server 60s
        frontend web
            bind 127.0.0.1:{port}
            default_backend app
        backend app
            balance roundrobin
            http-reuse safe
        {string.Join("\n", backends.Select((b, i) => $"    server app{i + 1} {b}"))}
        """);

    private static int FreePort()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)listener.LocalEndPoint!).Port;
    }
}
