// The tests exercise Linux process and socket behaviour only.
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]
