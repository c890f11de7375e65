import SwiftUI

@main
struct MobileDiffDemoApp: App {
    var body: some Scene {
        WindowGroup {
            ContentView()
        }
    }
}
