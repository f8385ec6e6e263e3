// Linux only, like Handoff.
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]
